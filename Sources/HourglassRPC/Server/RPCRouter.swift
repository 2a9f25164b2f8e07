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
  private var handlers: [String: Route] = [:]

  /// One registered handler.
  final class Route: Sendable {
    let handler: Handler

    init(_ handler: @escaping Handler) {
      self.handler = handler
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
  public mutating func registerUnary<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
    _ method: MethodDescriptor,
    _ body: @escaping @Sendable (Request, ServerContext) async throws -> Response
  ) {
    // What `run` does, written out: the usual call (its request delivered with the stream,
    // ended at once) makes no async call besides `body`, each of which would cost a frame
    // and an executor check.
    register(method) { stream, context in
      let ending: Ending
      do {
        let request: Request
        if let only = stream.inbound.singleElement {
          request = try MessageCoding.decode(Request.self, from: only)
        } else {
          request = try await Self.single(Request.self, from: stream.inbound)
        }
        let response = try await body(request, context)
        ending = Ending(last: try MessageCoding.encode(response), status: .ok, metadata: [:])
      } catch {
        ending = Ending(error, context)
      }
      if stream.writer.finishWithoutWaiting(lastMessage: ending.last, status: ending.status, metadata: ending.metadata) { return }
      try? await stream.writer.finish(lastMessage: ending.last, status: ending.status, metadata: ending.metadata)
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

  /// How a call ends: OK with the body's last message, or the status of the error it threw
  /// (`UNKNOWN` without details for errors that are not ``RPCError``).
  private struct Ending {
    var last: ByteBuffer?
    var status: Status
    var metadata: Metadata

    init(last: ByteBuffer?, status: Status, metadata: Metadata) {
      self.last = last
      self.status = status
      self.metadata = metadata
    }

    /// The end of a call whose body threw `error`. The error's cause, which the client is not
    /// told, goes into the call's annotations for its log.
    init(_ error: any Error, _ context: ServerContext) {
      last = nil
      metadata = [:]
      switch error {
      case let error as RPCError:
        if let cause = error.cause { context.annotations["hourglass.error_cause"] = "\(cause)" }
        status = Status(code: error.code, message: error.message)
        metadata = error.metadata
      case is CancellationError:
        status = Status(code: .cancelled, message: "the call was cancelled")
      default:
        context.annotations["hourglass.error_cause"] = "\(error)"
        status = Status(code: .unknown, message: "the server failed to handle the call")
      }
    }
  }

  /// Runs a handler body and ends the call (see ``Ending``).
  private static func run(_ stream: RPCServerStream, _ context: ServerContext, _ body: () async throws -> ByteBuffer?) async {
    let ending: Ending
    do {
      ending = Ending(last: try await body(), status: .ok, metadata: [:])
    } catch {
      ending = Ending(error, context)
    }
    // Most calls end at once, without another suspension point.
    if stream.writer.finishWithoutWaiting(lastMessage: ending.last, status: ending.status, metadata: ending.metadata) { return }
    try? await stream.writer.finish(lastMessage: ending.last, status: ending.status, metadata: ending.metadata)
  }

  /// The call's one request message: at hand without waiting when the transport delivered it
  /// with the stream, as it does for most unary and server-streaming calls.
  private static func single<M: SwiftProtobuf.Message>(_ type: M.Type, from inbound: RPCInbound<ByteBuffer>) async throws -> M {
    if let only = inbound.singleElement {
      return try MessageCoding.decode(M.self, from: only)
    }
    var iterator = inbound.makeAsyncIterator()
    guard let first = try await iterator.next() else {
      throw RPCError(code: .invalidArgument, message: "the call ended without a request message")
    }
    guard try await iterator.next() == nil else {
      throw RPCError(code: .invalidArgument, message: "a unary call received more than one request message")
    }
    return try MessageCoding.decode(M.self, from: first)
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
