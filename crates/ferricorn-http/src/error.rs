//! Everything that can go wrong while reading a request or encoding a response.
//!
//! Every variant maps to the HTTP status a server answers with, following
//! gunicorn's `Worker.handle_error` (`gunicorn/workers/base.py`): client
//! mistakes are 400 unless a more specific code applies (414 request line,
//! 431 header limits, 417 expectation, 501 transfer coding, 403 forbidden
//! PROXY peer). Errors caused by the application (bad status line or response
//! header) are 500: the client did nothing wrong.
//!
//! Variants carry only static detail so the error path never allocates and
//! never echoes request bytes back to the client.

/// A parse, framing or encoding error. [`Error::status`] gives the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Malformed request line (gunicorn `InvalidRequestLine`).
    #[error("invalid request line: {0}")]
    InvalidRequestLine(&'static str),
    /// Method is not a token, or breaks the conventional-method rules
    /// (gunicorn `InvalidRequestMethod`).
    #[error("invalid HTTP method")]
    InvalidMethod,
    /// Version is not `HTTP/d.d`, or not 1.x without
    /// `permit_unconventional_http_version` (gunicorn `InvalidHTTPVersion`).
    #[error("invalid HTTP version")]
    InvalidVersion,
    /// Malformed header line or value, or a header that makes the message
    /// ambiguous (gunicorn `InvalidHeader`).
    #[error("invalid header: {0}")]
    InvalidHeader(&'static str),
    /// Header name is not a token, or is refused by the header map
    /// (gunicorn `InvalidHeaderName`).
    #[error("invalid header name: {0}")]
    InvalidHeaderName(&'static str),
    /// obs-fold continuation line while `permit_obsolete_folding` is off.
    #[error("obsolete line folding is not accepted")]
    ObsoleteFolding,
    /// Request line longer than `limit_request_line` (gunicorn `LimitRequestLine`).
    #[error("request line is too long")]
    RequestLineTooLong,
    /// More header fields than `limit_request_fields`.
    #[error("too many header fields")]
    TooManyHeaders,
    /// One header field larger than `limit_request_field_size`.
    #[error("header field is too large")]
    HeaderFieldTooLarge,
    /// The header (or trailer) section as a whole is too large.
    #[error("header section is too large")]
    HeaderSectionTooLarge,
    /// `Expect` with anything but `100-continue` (gunicorn `ExpectationFailed`).
    #[error("unsupported expectation")]
    ExpectationFailed,
    /// A transfer coding we do not implement (gunicorn `UnsupportedTransferCoding`).
    #[error("unsupported transfer coding")]
    UnsupportedTransferCoding,
    /// Chunk size is not hex, empty, overflows, or its line is too long.
    #[error("invalid chunk size")]
    InvalidChunkSize,
    /// Chunk data not followed by CRLF.
    #[error("chunk data not followed by CRLF")]
    ChunkMissingTerminator,
    /// Chunk extension does not follow RFC 9112 7.1.1.
    #[error("invalid chunk extension")]
    InvalidChunkExtension,
    /// A trailer field that must not appear in trailers (RFC 9110 6.5.1).
    #[error("forbidden trailer field")]
    ForbiddenTrailer,
    /// The connection ended before the body did.
    #[error("request body is incomplete")]
    IncompleteBody,
    /// Malformed PROXY protocol v1 line.
    #[error("invalid PROXY protocol line: {0}")]
    InvalidProxyLine(&'static str),
    /// Malformed PROXY protocol v2 header.
    #[error("invalid PROXY protocol header: {0}")]
    InvalidProxyHeader(&'static str),
    /// PROXY protocol from a peer outside `proxy_allow_ips` (the caller decides).
    #[error("PROXY protocol not allowed from this peer")]
    ForbiddenProxy,
    /// The application's status line is malformed (answered with 500).
    #[error("invalid response status from the application")]
    InvalidStatus,
    /// An application response header name is not a token (500).
    #[error("invalid response header name from the application")]
    InvalidResponseHeaderName,
    /// An application response header value holds CR, LF, NUL or another
    /// control character, or a bad Content-Length (500).
    #[error("invalid response header value from the application")]
    InvalidResponseHeader,
}

impl Error {
    /// The HTTP status code a server answers this error with.
    pub fn status(&self) -> u16 {
        match self {
            Error::RequestLineTooLong => 414,
            Error::TooManyHeaders | Error::HeaderFieldTooLarge | Error::HeaderSectionTooLarge => {
                431
            }
            Error::ExpectationFailed => 417,
            Error::UnsupportedTransferCoding => 501,
            Error::ForbiddenProxy => 403,
            Error::InvalidStatus
            | Error::InvalidResponseHeaderName
            | Error::InvalidResponseHeader => 500,
            _ => 400,
        }
    }

    /// The reason phrase that goes with [`Error::status`].
    pub fn reason(&self) -> &'static str {
        reason_phrase(self.status())
    }

    /// True when the client caused the error (status < 500 or 501): the
    /// server logs it as an invalid request rather than an application error.
    pub fn is_client_error(&self) -> bool {
        !matches!(
            self,
            Error::InvalidStatus | Error::InvalidResponseHeaderName | Error::InvalidResponseHeader
        )
    }
}

/// Standard reason phrase for the status codes this crate produces (and a
/// few common others); `"Unknown"` otherwise.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(Error::InvalidMethod.status(), 400);
        assert_eq!(Error::InvalidVersion.status(), 400);
        assert_eq!(Error::RequestLineTooLong.status(), 414);
        assert_eq!(Error::RequestLineTooLong.reason(), "URI Too Long");
        assert_eq!(Error::TooManyHeaders.status(), 431);
        assert_eq!(Error::HeaderFieldTooLarge.status(), 431);
        assert_eq!(Error::ExpectationFailed.status(), 417);
        assert_eq!(Error::UnsupportedTransferCoding.status(), 501);
        assert_eq!(Error::UnsupportedTransferCoding.reason(), "Not Implemented");
        assert_eq!(Error::ForbiddenProxy.status(), 403);
        assert_eq!(Error::InvalidResponseHeader.status(), 500);
        assert!(!Error::InvalidStatus.is_client_error());
        assert!(Error::IncompleteBody.is_client_error());
    }
}
