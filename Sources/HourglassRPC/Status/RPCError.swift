/// A failed call: a status code, a message for humans, optional metadata and the local cause.
///
/// Servers throw it to choose the status a client sees; clients receive it for every call that
/// does not end with `OK`. Any other error thrown by a server handler reaches the client as
/// `UNKNOWN` without its text, so internal details never leak.
public struct RPCError: Error, Hashable, Sendable, CustomStringConvertible {
  /// The status code.
  public var code: StatusCode
  /// A message for humans; sent to the peer.
  public var message: String
  /// Trailing metadata sent with the status.
  public var metadata: Metadata
  /// The local error that led to this one; never sent to the peer.
  public var cause: (any Error & Sendable)?

  /// Creates an error with a code and a message.
  /// An error never has the code `OK`: that is turned into `UNKNOWN` rather than trapping,
  /// since codes can come from a peer.
  public init(code: StatusCode, message: String, metadata: Metadata = [:], cause: (any Error & Sendable)? = nil) {
    self.code = code == .ok ? .unknown : code
    self.message = message
    self.metadata = metadata
    self.cause = cause
  }

  public var description: String {
    var text = "\(code): \(message)"
    if let cause { text += " (cause: \(cause))" }
    return text
  }

  public static func == (lhs: RPCError, rhs: RPCError) -> Bool {
    lhs.code == rhs.code && lhs.message == rhs.message && lhs.metadata == rhs.metadata
  }

  public func hash(into hasher: inout Hasher) {
    hasher.combine(code)
    hasher.combine(message)
  }
}

/// The final status of a call as carried by TRAILERS.
public struct Status: Hashable, Sendable, CustomStringConvertible {
  /// The status code.
  public var code: StatusCode
  /// A message for humans; empty for `OK`.
  public var message: String

  /// Creates a status.
  public init(code: StatusCode, message: String = "") {
    self.code = code
    self.message = message
  }

  /// Success.
  public static let ok = Status(code: .ok)

  public var description: String { message.isEmpty ? "\(code)" : "\(code): \(message)" }
}

extension RPCError {
  /// What a write on a stream that has already ended throws: the peer finished or reset it, or
  /// its connection closed. The call's outcome is then what ended it, not the write.
  package static let streamClosed = RPCError(code: .cancelled, message: "the stream is closed")

  /// Whether this is ``streamClosed``.
  package var isStreamClosed: Bool { code == .cancelled && message == Self.streamClosed.message && cause == nil }
}
