/// The outcome of a call: gRPC's seventeen status codes, with the same numbers and meanings.
///
/// A struct over a private enum, so that new codes can be added without breaking anyone who
/// switches over the known ones.
public struct StatusCode: Hashable, Sendable, CustomStringConvertible {
  private enum Code: UInt32, Sendable {
    case ok = 0
    case cancelled = 1
    case unknown = 2
    case invalidArgument = 3
    case deadlineExceeded = 4
    case notFound = 5
    case alreadyExists = 6
    case permissionDenied = 7
    case resourceExhausted = 8
    case failedPrecondition = 9
    case aborted = 10
    case outOfRange = 11
    case unimplemented = 12
    case `internal` = 13
    case unavailable = 14
    case dataLoss = 15
    case unauthenticated = 16
  }

  private let code: Code

  private init(_ code: Code) { self.code = code }

  /// The code for a number received on the wire; unknown numbers are `nil`.
  public init?(rawValue: UInt32) {
    guard let code = Code(rawValue: rawValue) else { return nil }
    self.code = code
  }

  /// The number sent on the wire.
  public var rawValue: UInt32 { code.rawValue }

  /// Success.
  public static let ok = StatusCode(.ok)
  /// The caller cancelled the call.
  public static let cancelled = StatusCode(.cancelled)
  /// An error with no better code; also used for an unknown code received from a peer.
  public static let unknown = StatusCode(.unknown)
  /// The request is malformed (a bad schedule, an unknown field value).
  public static let invalidArgument = StatusCode(.invalidArgument)
  /// The deadline passed before the call finished.
  public static let deadlineExceeded = StatusCode(.deadlineExceeded)
  /// The thing asked for does not exist (or belongs to someone else).
  public static let notFound = StatusCode(.notFound)
  /// The thing to create exists already.
  public static let alreadyExists = StatusCode(.alreadyExists)
  /// The caller is known but may not do this.
  public static let permissionDenied = StatusCode(.permissionDenied)
  /// A limit was hit: frame or message size, concurrent streams, quota.
  public static let resourceExhausted = StatusCode(.resourceExhausted)
  /// The system is not in the state the call needs (e.g. deleting a running task).
  public static let failedPrecondition = StatusCode(.failedPrecondition)
  /// A concurrency conflict (e.g. a compare-and-set lost).
  public static let aborted = StatusCode(.aborted)
  /// A value past the valid range.
  public static let outOfRange = StatusCode(.outOfRange)
  /// The method does not exist on this server.
  public static let unimplemented = StatusCode(.unimplemented)
  /// A broken invariant: a bug, or a peer breaking the protocol.
  public static let `internal` = StatusCode(.internal)
  /// Try again, possibly elsewhere: the server is shutting down or unreachable.
  public static let unavailable = StatusCode(.unavailable)
  /// Unrecoverable data loss or corruption.
  public static let dataLoss = StatusCode(.dataLoss)
  /// The caller could not be authenticated.
  public static let unauthenticated = StatusCode(.unauthenticated)

  /// Every known code, in numeric order.
  public static let allKnown: [StatusCode] = (0...16).compactMap { StatusCode(rawValue: $0) }

  /// The canonical upper-case name, e.g. `DEADLINE_EXCEEDED`.
  public var description: String {
    switch code {
    case .ok: "OK"
    case .cancelled: "CANCELLED"
    case .unknown: "UNKNOWN"
    case .invalidArgument: "INVALID_ARGUMENT"
    case .deadlineExceeded: "DEADLINE_EXCEEDED"
    case .notFound: "NOT_FOUND"
    case .alreadyExists: "ALREADY_EXISTS"
    case .permissionDenied: "PERMISSION_DENIED"
    case .resourceExhausted: "RESOURCE_EXHAUSTED"
    case .failedPrecondition: "FAILED_PRECONDITION"
    case .aborted: "ABORTED"
    case .outOfRange: "OUT_OF_RANGE"
    case .unimplemented: "UNIMPLEMENTED"
    case .internal: "INTERNAL"
    case .unavailable: "UNAVAILABLE"
    case .dataLoss: "DATA_LOSS"
    case .unauthenticated: "UNAUTHENTICATED"
    }
  }
}
