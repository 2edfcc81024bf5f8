//! `Debug` of [`ClientFrame`], written by hand so that an AUTH frame
//! shows its token's length, never its bytes (a frame may reach a log or
//! a test's failure message).
//!
//! Limits: none (formatting only). Must never: print a token's bytes.

use super::ClientFrame;

impl std::fmt::Debug for ClientFrame<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientFrame::Preamble => f.write_str("Preamble"),
            ClientFrame::Auth { token } => write!(f, "Auth {{ token: <{} bytes> }}", token.len()),
            ClientFrame::Hello { producer } => f.debug_struct("Hello").field("producer", producer).finish(),
            ClientFrame::Data(d) => f.debug_tuple("Data").field(d).finish(),
        }
    }
}

