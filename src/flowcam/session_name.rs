//! Where and when a sample was taken, as encoded in its session folder's name:
//! `<prefix>_<lat>_<lon>_<DDMMYYYY>[_<depth>]`, for example
//! `Survey_Tank10_54.0143_-2.7770_04052023_1` (54.0143 N, 2.7770 W, 4 May 2023, 1 m deep).
//!
//! Most folders do not follow the convention, and that is normal: they simply carry no
//! position. A name that does follow it (decimal latitude and longitude followed by an
//! eight-digit date) but holds an impossible value is an error, because silently dropping
//! a typo'd position would lose the metadata users care most about.

use chrono::NaiveDate;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplePosition {
    /// Degrees, positive north.
    pub latitude: f64,
    /// Degrees, positive east.
    pub longitude: f64,
    pub date: NaiveDate,
    /// Metres below the surface, if the name gives it.
    pub depth_m: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SessionName {
    pub name: String,
    /// The part before the coordinates (the whole name when there are none).
    pub prefix: String,
    pub position: Option<SamplePosition>,
}

impl SessionName {
    pub fn parse(name: &str) -> Result<SessionName, String> {
        let tokens: Vec<&str> = name.split('_').collect();
        let plain = || SessionName {
            name: name.to_string(),
            prefix: name.to_string(),
            position: None,
        };
        let is_date = |t: &str| t.len() == 8 && t.bytes().all(|b| b.is_ascii_digit());
        let n = tokens.len();
        let (date_at, depth) = if n >= 3 && is_date(tokens[n - 1]) {
            (n - 1, None)
        } else if n >= 4 && is_date(tokens[n - 2]) && is_number(tokens[n - 1]) {
            (n - 2, Some(tokens[n - 1]))
        } else {
            return Ok(plain());
        };
        let (lat, lon) = (tokens[date_at - 2], tokens[date_at - 1]);
        if !is_number(lat) || !is_number(lon) {
            return Ok(plain());
        }
        let bad = |what: String| {
            Err(format!(
                "session folder name {name:?} follows <prefix>_<lat>_<lon>_<DDMMYYYY>[_<depth>] \
                 but {what}; rename the folder or pass --experiment-name"
            ))
        };
        let latitude: f64 = lat.parse().expect("checked number");
        let longitude: f64 = lon.parse().expect("checked number");
        if !(-90.0..=90.0).contains(&latitude) {
            return bad(format!("latitude {lat} is outside -90..90"));
        }
        if !(-180.0..=180.0).contains(&longitude) {
            return bad(format!("longitude {lon} is outside -180..180"));
        }
        let d = tokens[date_at];
        let date = match NaiveDate::from_ymd_opt(
            d[4..].parse().expect("digits"),
            d[2..4].parse().expect("digits"),
            d[..2].parse().expect("digits"),
        ) {
            Some(date) => date,
            None => return bad(format!("{d} is not a real date (DDMMYYYY)")),
        };
        let depth_m = match depth {
            None => None,
            Some(t) => {
                let v: f64 = t.parse().expect("checked number");
                if v < 0.0 {
                    return bad(format!("depth {t} is negative"));
                }
                Some(v)
            }
        };
        Ok(SessionName {
            name: name.to_string(),
            prefix: tokens[..date_at - 2].join("_"),
            position: Some(SamplePosition {
                latitude,
                longitude,
                date,
                depth_m,
            }),
        })
    }
}

/// A plain decimal number: optional sign, digits, optional fraction. No exponents, no
/// `inf`, no `nan`, which `f64::from_str` would accept.
fn is_number(token: &str) -> bool {
    let digits = token.strip_prefix(['-', '+']).unwrap_or(token);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && !(digits.contains('.') && frac.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn design_example() {
        let s = SessionName::parse("Survey_Tank10_54.0143_-2.7770_04052023_1").unwrap();
        assert_eq!(s.prefix, "Survey_Tank10");
        let p = s.position.unwrap();
        assert_eq!(p.latitude, 54.0143);
        assert_eq!(p.longitude, -2.777);
        assert_eq!(p.date, NaiveDate::from_ymd_opt(2023, 5, 4).unwrap());
        assert_eq!(p.depth_m, Some(1.0));
    }

    #[test]
    fn without_depth_and_southern_eastern() {
        let s = SessionName::parse("X_-33.8568_151.2153_31122024").unwrap();
        let p = s.position.unwrap();
        assert_eq!((p.latitude, p.longitude), (-33.8568, 151.2153));
        assert_eq!(p.depth_m, None);
        assert_eq!(s.prefix, "X");
    }

    #[test]
    fn names_without_position_are_normal() {
        for name in [
            "19_10_Tank25_blanksremoved",
            "plain",
            "Run_2_04052023",
            "a_b_c_04052023",
            "Tank_1e5_2_04052023",
            "",
        ] {
            let s = SessionName::parse(name).unwrap();
            assert_eq!(s.position, None, "{name}");
            assert_eq!(s.prefix, name);
        }
    }

    #[test]
    fn impossible_values_are_errors_that_name_the_folder() {
        for (name, why) in [
            ("S_95.0_1.0_04052023", "latitude"),
            ("S_54.0_-181.5_04052023", "longitude"),
            ("S_54.0_1.0_31022023", "real date"),
            ("S_54.0_1.0_04132023_2", "real date"),
            ("S_54.0_1.0_04052023_-2", "negative"),
        ] {
            let e = SessionName::parse(name).unwrap_err();
            assert!(e.contains(name) && e.contains(why), "{e}");
        }
    }
}
