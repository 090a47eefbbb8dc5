//! The `autoscaler` mode: a single-machine autoscaler that scales local processes ("pods").
//!
//! [`LocalAutoscaler`] receives stats (the shared [`crate::autoscaler_client::wire`]) on its
//! server, runs one [`scaler`] per revision, starts and stops pods through the process
//! [`supervisor`], and publishes their endpoints: in process to the embedding activator, or on
//! its `/endpoints` feed (`crate::discovery::feed`) to an activator in another process.

pub mod exec_pod;
mod local;
pub mod scaler;
mod server;
mod status;
pub mod supervisor;

pub use local::LocalAutoscaler;
pub use server::MAX_FRAME;
