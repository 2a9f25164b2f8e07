import HourglassRPC

/// A failed client call: what kind of failure, the service's message, and the status code.
///
/// ``Kind`` groups the protocol's status codes into what a caller can act on: fix the input,
/// the task is gone, not allowed, try again later.
public struct HourglassClientError: Error, Sendable, Hashable, CustomStringConvertible {
  /// What went wrong, in terms a caller can act on.
  public enum Kind: String, Sendable, Hashable {
    /// The request was refused as invalid; ``HourglassClientError/message`` names the field.
    case invalidArgument
    /// No such task, or not the caller's (the two are indistinguishable on purpose).
    case notFound
    /// It exists already.
    case alreadyExists
    /// The caller may not do this.
    case permissionDenied
    /// The caller's identity was missing or not accepted.
    case unauthenticated
    /// Not in this state, e.g. deleting a task whose run is in progress without cancelling it.
    case failedPrecondition
    /// The service is overloaded or a limit was reached.
    case resourceExhausted
    /// The service could not be reached or could not answer; retried by the client.
    case unavailable
    /// The call's deadline passed.
    case deadlineExceeded
    /// The call was cancelled.
    case cancelled
    /// Anything else (internal errors, unimplemented methods, protocol errors).
    case other
  }

  /// What went wrong.
  public var kind: Kind
  /// The status code the call ended with.
  public var code: StatusCode
  /// The service's (or the transport's) explanation.
  public var message: String

  /// Creates an error.
  public init(kind: Kind, code: StatusCode, message: String) {
    self.kind = kind
    self.code = code
    self.message = message
  }

  /// Maps a protocol error.
  public init(_ error: RPCError) {
    let kind: Kind
    switch error.code {
    case .invalidArgument, .outOfRange: kind = .invalidArgument
    case .notFound: kind = .notFound
    case .alreadyExists: kind = .alreadyExists
    case .permissionDenied: kind = .permissionDenied
    case .unauthenticated: kind = .unauthenticated
    case .failedPrecondition: kind = .failedPrecondition
    case .resourceExhausted: kind = .resourceExhausted
    case .unavailable: kind = .unavailable
    case .deadlineExceeded: kind = .deadlineExceeded
    case .cancelled: kind = .cancelled
    default: kind = .other
    }
    self.init(kind: kind, code: error.code, message: error.message)
  }

  public var description: String { message.isEmpty ? code.description : "\(code.description): \(message)" }
}
