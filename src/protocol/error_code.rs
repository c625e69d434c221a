//! The one vocabulary of error codes: HTTP error bodies and socket `error` frames carry the
//! same snake_case codes, and clients branch on them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidJson,
    InvalidInput,
    PayloadTooLarge,
    Unauthorized,
    InvalidCredentials,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    UsernameTaken,
    AlreadyFriends,
    RequestPending,
    RequestNotPending,
    /// A group at `XFCHAT_GROUP_MAX_MEMBERS`.
    GroupFull,
    /// A friend request to someone who declined the last one, within the cooldown.
    RequestDeclined,
    ClientMsgIdReused,
    /// A reaction beyond the number of different ones a message may carry.
    TooManyReactions,
    NotAGroup,
    RateLimited,
    TooManyConnections,
    Overloaded,
    Unavailable,
    Timeout,
    Internal,
    /// A socket frame that could not be read.
    BadFrame,
    /// A send whose commit failed; sending it again is safe.
    PersistFailed,
    /// A code this build does not know (from a newer server).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Every code a server sends, for metrics registered up front.
    pub const ALL: [ErrorCode; 25] = [
        Self::InvalidJson,
        Self::InvalidInput,
        Self::PayloadTooLarge,
        Self::Unauthorized,
        Self::InvalidCredentials,
        Self::Forbidden,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::UsernameTaken,
        Self::AlreadyFriends,
        Self::RequestPending,
        Self::RequestNotPending,
        Self::RequestDeclined,
        Self::GroupFull,
        Self::ClientMsgIdReused,
        Self::TooManyReactions,
        Self::NotAGroup,
        Self::RateLimited,
        Self::TooManyConnections,
        Self::Overloaded,
        Self::Unavailable,
        Self::Timeout,
        Self::Internal,
        Self::BadFrame,
        Self::PersistFailed,
    ];

    /// Whose fault an answer with this code is: `server` for a request the server could not
    /// serve (the client did nothing wrong and may retry), `client` otherwise.
    pub fn fault(self) -> &'static str {
        match self {
            Self::Overloaded
            | Self::Unavailable
            | Self::Timeout
            | Self::Internal
            | Self::PersistFailed => "server",
            _ => "client",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::InvalidInput => "invalid_input",
            Self::PayloadTooLarge => "payload_too_large",
            Self::Unauthorized => "unauthorized",
            Self::InvalidCredentials => "invalid_credentials",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UsernameTaken => "username_taken",
            Self::AlreadyFriends => "already_friends",
            Self::RequestPending => "request_pending",
            Self::RequestNotPending => "request_not_pending",
            Self::RequestDeclined => "request_declined",
            Self::GroupFull => "group_full",
            Self::ClientMsgIdReused => "client_msg_id_reused",
            Self::TooManyReactions => "too_many_reactions",
            Self::NotAGroup => "not_a_group",
            Self::RateLimited => "rate_limited",
            Self::TooManyConnections => "too_many_connections",
            Self::Overloaded => "overloaded",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::Internal => "internal",
            Self::BadFrame => "bad_frame",
            Self::PersistFailed => "persist_failed",
            Self::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn each_code_is_written_as_its_name_on_the_wire() {
        for code in ErrorCode::ALL {
            let wire = serde_json::to_value(code).unwrap();
            assert_eq!(wire, code.as_str());
            assert_eq!(serde_json::from_value::<ErrorCode>(wire).unwrap(), code);
        }
    }
}
