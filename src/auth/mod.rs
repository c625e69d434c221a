//! Who is calling: password hashing, access tokens and their revocation. The HTTP extractors
//! that turn a bearer token into a caller live in `http::auth`.

mod password;
pub mod revoked;
mod token;

pub use password::{hash_password, verify_password};
pub use token::{legacy_session, Session, Tokens};
