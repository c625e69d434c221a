//! XFChat: a realtime chat hub whose one store is PostgreSQL.
//!
//! This file only names the pieces; [`server`] wires them together.

pub mod auth;
pub mod bus;
pub mod config;
pub mod db;
pub mod doctor;
pub mod error;
pub mod http;
pub mod hub;
pub mod ids;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod throttle;
pub mod validate;
pub mod webhook;

pub use server::{run, Server};
