//! The S3 destination sends Content-MD5, so a body damaged on the way is rejected by the
//! server instead of stored; and it answers whether single keys exist. (Its own test binary: it sets the AWS variables of this
//! process, which the credential chain reads, before any other thread runs.)

mod common;

use common::garage::Garage;
use flowcam_pipeline::upload::{Destination, Outgoing, S3Destination, S3Settings, UploadError};
use md5::{Digest, Md5};

#[test]
fn a_body_that_does_not_match_its_md5_is_rejected_and_not_stored() {
    let garage = Garage::shared();
    for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"] {
        // SAFETY: the only test in this binary, and no other thread reads the environment.
        unsafe { std::env::set_var(name, &garage.vars[name]) };
    }
    let mut settings = S3Settings::new(garage.bucket());
    settings.endpoint = Some(garage.endpoint().to_string());
    let destination = S3Destination::connect(settings).unwrap();
    destination.check().unwrap();

    let prefix = format!("integrity-{}/", std::process::id());
    let sent = b"the vignette as read from disk".to_vec();
    let damaged = b"the vignette as read from disc".to_vec();
    let object = |key: &str, body: &[u8], md5_of: &[u8]| Outgoing {
        key: format!("{prefix}{key}"),
        body: body.to_vec(),
        md5: Md5::digest(md5_of).into(),
        content_type: "image/tiff",
        metadata: vec![("particle-id".into(), "1".into())],
    };

    let error = destination
        .send(&[object("damaged.tif", &damaged, &sent)])
        .unwrap_err();
    match &error {
        UploadError::Object(message) => assert!(message.contains("damaged"), "{message}"),
        other => panic!("a damaged body fails only its object, got {other:?}"),
    }
    destination
        .send(&[object("intact.tif", &sent, &sent)])
        .unwrap();

    let listed = destination.list(&prefix).unwrap().unwrap();
    let keys: Vec<&str> = listed.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, vec![format!("{prefix}intact.tif").as_str()]);
    assert_eq!(listed[0].etag, hex::encode(Md5::digest(&sent)));
    assert_eq!(listed[0].size, sent.len() as u64);

    // HeadObject answers for single keys too: the stored one exists, the rejected not.
    let keys = [
        format!("{prefix}intact.tif"),
        format!("{prefix}damaged.tif"),
    ];
    assert_eq!(destination.exists(&keys).unwrap(), vec![true, false]);
    garage.delete(garage.bucket(), &listed[0].key);
    assert_eq!(destination.exists(&keys[..1]).unwrap(), vec![false]);
}
