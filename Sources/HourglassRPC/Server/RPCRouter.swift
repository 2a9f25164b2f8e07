import NIOCore
import SwiftProtobuf

/// Maps method paths to handlers. Every call type is registered through a typed function and
/// stored in one uniform shape: a function of the raw stream.
public struct RPCRouter: Sendable {
  /// A registered handler: runs a whole call, including sending its status.
  public typealias Handler = @Sendable (RPCServerStream, ServerContext) async -> Void

  /// Each handler in a class of its own: a function stored in a `Dictionary` directly is kept
  /// in its most general representation, and taking it out for a call wraps it in
  /// reabstraction thunks (an allocation, and one more async frame and executor check per call).
  @usableFromInline var handlers: [String: Route] = [:]

  /// One registered handler.
  @usableFromInline
  final class Route: Sendable {
    /// Runs a call in a task: every transport can use it.
    let handler: Handler
    /// Runs a unary call on its connection's event loop, for a method registered with
    /// ``RPCRouter/registerUnaryOnEventLoop(_:answering:)``: called with the request message
    /// and the call's answer, from the loop that read the request.
    let onLoop: (@Sendable (ByteBuffer, ServerContext, UnaryAnswer) -> Void)?
    /// Runs a unary call whose request came with its stream, in a task, and says how it ends;
    /// the server sends that ending itself. What `handler` does for such a call, without the
    /// stream: a server that has the call's parts at hand need not copy them into one (each
    /// copy of a stream retains its every part, a sixth of a small call's reference counting).
    let unary: (@Sendable (ByteBuffer, ServerContext) async -> UnaryEnding)?

    @usableFromInline
    init(
      _ handler: @escaping Handler, onLoop: (@Sendable (ByteBuffer, ServerContext, UnaryAnswer) -> Void)? = nil,
      unary: (@Sendable (ByteBuffer, ServerContext) async -> UnaryEnding)? = nil
    ) {
      self.handler = handler
      self.onLoop = onLoop
      self.unary = unary
    }

    /// A unary method's route: `unary` for a call whose request came with its stream, and the
    /// same in a stream handler for every other call.
    @usableFromInline
    static func unary(
      onLoop: (@Sendable (ByteBuffer, ServerContext, UnaryAnswer) -> Void)? = nil,
      _ unary: @escaping @Sendable (ByteBuffer, ServerContext) async -> UnaryEnding
    ) -> Route {
      let handler: Handler = { stream, context in
        let ending: UnaryEnding
        do {
          ending = await unary(try await RPCRouter.singleMessage(from: stream.inbound), context)
        } catch {
          ending = UnaryEnding(error, context)
        }
        await ending.send(on: stream.writer)
      }
      return Route(handler, onLoop: onLoop, unary: unary)
    }
  }

  /// An empty router.
  public init() {}

  /// The handler for `path`, if one is registered.
  public subscript(path: String) -> Handler? { handlers[path]?.handler }

  /// The route for `path`, if one is registered.
  func route(_ path: String) -> Route? { handlers[path] }

  /// The registered paths.
  public var methods: [String] { handlers.keys.sorted() }

  /// Registers a raw handler for `method`.
  public mutating func register(_ method: MethodDescriptor, _ handler: @escaping Handler) {
    handlers[method.path] = Route(handler)
  }

  /// Registers a unary method: one request, one response.
  ///
  /// Inlinable, like the other unary registrations, so that the handler's wrapper is
  /// specialised for its message types where it is registered: unspecialised, it looked up
  /// generic metadata on every call.
  @inlinable
  public mutating func registerUnary<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
    _ method: MethodDescriptor,
    _ body: @escaping @Sendable (Request, ServerContext) async throws -> Response
  ) {
    handlers[method.path] = .unary { message, context in
      do {
        let response = try await body(try MessageCoding.decode(Request.self, from: message), context)
        return UnaryEnding(last: try MessageCoding.encode(response), status: .ok, metadata: [:])
      } catch {
        return UnaryEnding(error, context)
      }
    }
  }

  /// Registers a unary method whose handler runs on the connection's event loop, without a
  /// task, and answers through `responder`, at once or later from any thread (see
  /// ``UnaryResponder``).
  ///
  /// For handlers that never block: the loop serves every call of the connection, and a
  /// handler that blocks it stalls them all. A handler that needs to wait hands its work on
  /// (to a queue, a writer thread, another service) and answers when it completes. There is no
  /// task to cancel: a call the client cancels, or whose deadline passes, ends for the client at
  /// once, and a later answer is dropped.
  ///
  /// Saves the task, the job and the executor hops of an async handler (a fifth to a quarter of a
  /// small call's CPU; see docs/benchmarks.md). A transport without an event loop (the
  /// in-process one), a server configured to run handlers off the loop, and a call whose
  /// request did not arrive with its stream run the same handler in a task instead.
  @inlinable
  public mutating func registerUnaryOnEventLoop<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
    _ method: MethodDescriptor,
    answering body: @escaping @Sendable (Request, ServerContext, UnaryResponder<Response>) -> Void
  ) {
    let onLoop: @Sendable (ByteBuffer, ServerContext, UnaryAnswer) -> Void = { message, context, answer in
      let request: Request
      do {
        request = try MessageCoding.decode(Request.self, from: message)
      } catch {
        answer.settle(UnaryEnding(error, context))
        return
      }
      body(request, context, UnaryResponder(answer: answer))
    }
    handlers[method.path] = .unary(onLoop: onLoop) { message, context in
      let request: Request
      do {
        request = try MessageCoding.decode(Request.self, from: message)
      } catch {
        return UnaryEnding(error, context)
      }
      return await AwaitedAnswer.run(context) { answer in body(request, context, UnaryResponder(answer: answer)) }
    }
  }

  /// Registers a unary method answered on the connection's event loop by a function that
  /// returns the response (or throws): ``registerUnaryOnEventLoop(_:answering:)`` for a handler
  /// that has its answer at once.
  @inlinable
  public mutating func registerUnaryOnEventLoop<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
    _ method: MethodDescriptor,
    _ body: @escaping @Sendable (Request, ServerContext) throws -> Response
  ) {
    // The ending is settled directly rather than through a ``UnaryResponder``, whose generic
    // type would be looked up on every call.
    let onLoop: @Sendable (ByteBuffer, ServerContext, UnaryAnswer) -> Void = { message, context, answer in
      answer.settle(Self.ending(of: body, message, context))
    }
    handlers[method.path] = .unary(onLoop: onLoop) { message, context in Self.ending(of: body, message, context) }
  }

  /// How a call answered by `body` ends, `message` being its request.
  @inlinable
  static func ending<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
    of body: (Request, ServerContext) throws -> Response, _ message: ByteBuffer, _ context: ServerContext
  ) -> UnaryEnding {
    do {
      return ending(of: body, try MessageCoding.decode(Request.self, from: message), context)
    } catch {
      return UnaryEnding(error, context)
    }
  }

  /// How a call answered by `body` ends, `request` being its request, decoded.
  @inlinable
  static func ending<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
    of body: (Request, ServerContext) throws -> Response, _ request: Request, _ context: ServerContext
  ) -> UnaryEnding {
    do {
      return UnaryEnding(last: try MessageCoding.encode(try body(request, context)), status: .ok, metadata: [:])
    } catch {
      return UnaryEnding(error, context)
    }
  }

  /// Registers a server-streaming method: one request, many responses.
  public mutating func registerServerStreaming<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
    _ method: MethodDescriptor,
    _ body: @escaping @Sendable (Request, RPCWriter<Response>, ServerContext) async throws -> Void
  ) {
    register(method) { stream, context in
      await Self.run(stream, context) {
        let request = try await Self.single(Request.self, from: stream.inbound)
        try await body(request, Self.writer(stream), context)
        return nil
      }
    }
  }

  /// Registers a client-streaming method: many requests, one response.
  public mutating func registerClientStreaming<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
    _ method: MethodDescriptor,
    _ body: @escaping @Sendable (RPCMessages<Request>, ServerContext) async throws -> Response
  ) {
    register(method) { stream, context in
      await Self.run(stream, context) {
        let response = try await body(Self.messages(Request.self, stream.inbound), context)
        return try MessageCoding.encode(response)
      }
    }
  }

  /// Registers a bidirectional-streaming method.
  public mutating func registerBidirectional<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
    _ method: MethodDescriptor,
    _ body: @escaping @Sendable (RPCMessages<Request>, RPCWriter<Response>, ServerContext) async throws -> Void
  ) {
    register(method) { stream, context in
      await Self.run(stream, context) {
        try await body(Self.messages(Request.self, stream.inbound), Self.writer(stream), context)
        return nil
      }
    }
  }

  /// Runs a handler body and ends the call (see ``UnaryEnding``).
  private static func run(_ stream: RPCServerStream, _ context: ServerContext, _ body: () async throws -> ByteBuffer?) async {
    let ending: UnaryEnding
    do {
      ending = UnaryEnding(last: try await body(), status: .ok, metadata: [:])
    } catch {
      ending = UnaryEnding(error, context)
    }
    // Most calls end at once, without another suspension point.
    await ending.send(on: stream.writer)
  }

  /// The call's one request message: at hand without waiting when the transport delivered it
  /// with the stream, as it does for most unary and server-streaming calls.
  static func single<M: SwiftProtobuf.Message>(_ type: M.Type, from inbound: RPCInbound<ByteBuffer>) async throws -> M {
    try MessageCoding.decode(M.self, from: try await singleMessage(from: inbound))
  }

  /// How long a call's one request, once whole, waits for the peer to end its side of the
  /// stream.
  static let requestEndTimeout: Duration = .seconds(10)

  /// The call's one request message, undecoded; `INVALID_ARGUMENT` when there is none or more,
  /// or when the peer does not end its side within ``requestEndTimeout`` of the message: a peer
  /// that sent a whole request and never ended the stream would otherwise make the handler hold
  /// it (up to the maximum message size, on each of its streams) for as long as the connection
  /// lasts.
  static func singleMessage(from inbound: RPCInbound<ByteBuffer>) async throws -> ByteBuffer {
    if let only = inbound.singleElement { return only }
    let iterator = IteratorBox(inbound.makeAsyncIterator())
    guard let first = try await iterator.next() else {
      throw RPCError(code: .invalidArgument, message: "the call ended without a request message")
    }
    let ended: Bool? = try await withThrowingTaskGroup(of: Bool?.self) { group in
      group.addTask { try await iterator.next() == nil }
      group.addTask {
        try await Task.sleep(for: requestEndTimeout)
        return nil
      }
      defer { group.cancelAll() }
      return try await group.next() ?? nil
    }
    guard let ended else {
      throw RPCError(code: .invalidArgument, message: "the request's stream did not end within \(requestEndTimeout) of its message")
    }
    guard ended else {
      throw RPCError(code: .invalidArgument, message: "a unary call received more than one request message")
    }
    return first
  }

  private static func messages<M: SwiftProtobuf.Message>(_ type: M.Type, _ inbound: RPCInbound<ByteBuffer>) -> RPCMessages<M> {
    RPCMessages {
      let box = IteratorBox(inbound.makeAsyncIterator())
      return {
        guard let next = try await box.next() else { return nil }
        return try MessageCoding.decode(M.self, from: next)
      }
    }
  }

  private static func writer<M: SwiftProtobuf.Message>(_ stream: RPCServerStream) -> RPCWriter<M> {
    RPCWriter { message in
      try await stream.writer.writeMessage(try MessageCoding.encode(message))
    }
  }
}

/// Holds a non-Sendable iterator for the one task that drives it.
final class IteratorBox<Base: AsyncIteratorProtocol>: @unchecked Sendable where Base.Element: Sendable {
  // Unchecked: an RPCMessages iterator is used by one task at a time, like any iterator.
  private var base: Base
  init(_ base: Base) { self.base = base }
  func next() async throws -> Base.Element? { try await base.next() }
}
