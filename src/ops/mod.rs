//! Operator controls, as parts the upload engine plugs in.
pub mod hooks;
pub mod metrics;
pub mod reload;
pub mod throttle;
pub mod window;
