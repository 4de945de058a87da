//! The FlowCam domain: what the instrument writes and what we make of it.

pub mod blank;
pub mod calibration;
pub mod collage;
pub mod input;
pub mod kept_pages;
pub mod lst;
pub mod region;
pub mod session_name;
pub mod side_files;
pub mod vignette;

pub use collage::{ByPage, Collage, PixelFormat};
pub use lst::{Field, FieldType, ParticleList};
pub use session_name::{SamplePosition, SessionName};
