import Logging
import Synchronization

/// What a server handler knows about its call besides the request.
///
/// A context is one reference to where its values are kept (for a served call, the server's
/// per-call recorder, which holds the stream they come from): copying one, as every handler
/// that answers later does, retains one object rather than each of its five parts.
public struct ServerContext: Sendable {
  private let source: any ServerContextSource

  /// The method called.
  public var method: String { source.callMethod }
  /// Request metadata.
  public var metadata: Metadata { source.callMetadata }
  /// The authenticated caller, when the transport has one.
  public var peer: PeerIdentity? { source.callPeer }
  /// The time the client allows, measured from when the server received the call.
  public var timeout: Duration? { source.callTimeout }
  /// What the handler learned about the call (the task it concerns, why it failed), added to
  /// the call's log line and visible to the server's `onCallFinished` hook.
  public var annotations: CallAnnotations { source.callAnnotations }

  /// Creates a context with its own, empty annotations.
  public init(method: String, metadata: Metadata, peer: PeerIdentity?, timeout: Duration?) {
    self.source = StoredServerContext(method: method, metadata: metadata, peer: peer, timeout: timeout)
  }

  /// Creates a context that reads its values from `source` (the server's per-call recorder).
  init(source: any ServerContextSource) {
    self.source = source
  }
}

/// Where a ``ServerContext`` reads its values. A class, so that a context is one reference.
protocol ServerContextSource: AnyObject, Sendable {
  var callMethod: String { get }
  var callMetadata: Metadata { get }
  var callPeer: PeerIdentity? { get }
  var callTimeout: Duration? { get }
  var callAnnotations: CallAnnotations { get }
}

/// The values of a context made by its public initializer, with annotations of its own.
private final class StoredServerContext: ServerContextSource {
  let callMethod: String
  let callMetadata: Metadata
  let callPeer: PeerIdentity?
  let callTimeout: Duration?
  let callAnnotations = CallAnnotations()

  init(method: String, metadata: Metadata, peer: PeerIdentity?, timeout: Duration?) {
    self.callMethod = method
    self.callMetadata = metadata
    self.callPeer = peer
    self.callTimeout = timeout
  }
}

/// Log metadata a handler attaches to its call, for the one log line each call gets when it
/// ends (`hourglass.task_id`, `hourglass.error`). Shared by every copy of the call's
/// ``ServerContext``; safe to set from any task.
///
/// Not final only so that the server's per-call recorder (`RecordingWriter`, in this module)
/// can be the call's annotations too; it cannot be subclassed outside this module. Unchecked:
/// its one stored property is a `Mutex`.
public class CallAnnotations: @unchecked Sendable {
  private let values = Mutex<Logger.Metadata>([:])

  /// An empty set.
  public init() {}

  /// One value; setting `nil` removes it.
  public subscript(key: String) -> Logger.MetadataValue? {
    get { values.withLock { $0[key] } }
    set { values.withLock { $0[key] = newValue } }
  }

  /// Every value set so far.
  public var metadata: Logger.Metadata { values.withLock { $0 } }
}

/// Sends response messages of a streaming call, in order.
public struct RPCWriter<Message: Sendable>: Sendable {
  private let body: @Sendable (Message) async throws -> Void

  /// Wraps a function that sends one message.
  public init(_ body: @escaping @Sendable (Message) async throws -> Void) {
    self.body = body
  }

  /// Sends one message; waits while the peer has no credit left for it.
  public func write(_ message: Message) async throws {
    try await body(message)
  }
}

/// Incoming messages of a streaming call, decoded.
public struct RPCMessages<Message: Sendable>: AsyncSequence, Sendable {
  public typealias Element = Message
  public typealias Failure = any Error

  private let makeNext: @Sendable () -> (@Sendable () async throws -> Message?)

  /// Wraps a factory of "next" functions (one per iteration).
  public init(_ makeNext: @escaping @Sendable () -> (@Sendable () async throws -> Message?)) {
    self.makeNext = makeNext
  }

  public func makeAsyncIterator() -> Iterator { Iterator(next: makeNext()) }

  /// The iterator.
  public struct Iterator: AsyncIteratorProtocol {
    let next: @Sendable () async throws -> Message?
    public mutating func next() async throws -> Message? { try await next() }
  }
}
