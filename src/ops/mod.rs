//! Operator controls, as parts the upload engine plugs in.
pub mod hooks;
pub mod metrics;
pub mod throttle;
pub mod window;
