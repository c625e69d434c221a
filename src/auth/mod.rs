//! Who is calling: password hashing, access tokens and their revocation. The HTTP extractors
//! that turn a bearer token into a caller live in `http::auth`.

pub mod external;
mod password;
pub mod revoked;
mod token;

pub use password::{hash_password, verify_password};
pub use token::{external_session, legacy_session, Session, Tokens};
