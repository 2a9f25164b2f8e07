/// What a server handler knows about its call besides the request.
public struct ServerContext: Sendable {
  /// The method called.
  public var method: String
  /// Request metadata.
  public var metadata: Metadata
  /// The authenticated caller, when the transport has one.
  public var peer: PeerIdentity?
  /// The time the client allows, measured from when the server received the call.
  public var timeout: Duration?

  /// Creates a context.
  public init(method: String, metadata: Metadata, peer: PeerIdentity?, timeout: Duration?) {
    self.method = method
    self.metadata = metadata
    self.peer = peer
    self.timeout = timeout
  }
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
