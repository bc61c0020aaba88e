//! (module under construction)

pub mod retry;
pub mod stream;
