import NIOCore
import SwiftProtobuf

/// Makes typed calls over any ``ClientTransport``: unary, server-streaming, client-streaming
/// and bidirectional. Each call fails with an ``RPCError``; cancelling the calling task sends
/// RESET(CANCELLED) so the server's handler is cancelled too.
public struct RPCClient: Sendable {
  /// The transport calls go over.
  public let transport: any ClientTransport

  /// Creates a client.
  public init(transport: any ClientTransport) {
    self.transport = transport
  }

  /// One request, one response.
  @inlinable
  public func unary<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
    _ method: MethodDescriptor,
    request: Request,
    responseType: Response.Type = Response.self,
    options: CallOptions = .defaults
  ) async throws(RPCError) -> Response {
    let payload = try MessageCoding.encode(request)
    if Task.isCancelled {
      throw RPCError(code: .cancelled, message: "the call was cancelled before it started")
    }
    let head = RequestHead(method: method.path, metadata: options.metadata, timeout: options.timeout)
    let response: UnaryResponse
    do {
      response = try await transport.unary(head, request: payload)
    } catch {
      throw Self.callError(error)
    }
    return try Self.decode(response, as: Response.self)
  }

  /// One request, one response, without waiting: `completion` is told the outcome once.
  ///
  /// Over ``ClientTransport/unary(_:request:completion:)``: on a TLS connection that is open,
  /// the call starts on the connection's event loop and `completion` runs there, with no task
  /// (it must not block). For callers that keep many calls in flight from the loop, such as a
  /// load generator; the async ``unary(_:request:responseType:options:)`` is the usual API. The
  /// call is not tied to a task, so it is cancelled only by its deadline (`options.timeout`).
  @inlinable
  public func unary<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
    _ method: MethodDescriptor,
    request: Request,
    responseType: Response.Type = Response.self,
    options: CallOptions = .defaults,
    completion: @escaping @Sendable (Result<Response, RPCError>) -> Void
  ) {
    let payload: ByteBuffer
    do {
      payload = try MessageCoding.encode(request)
    } catch {
      completion(.failure(error))
      return
    }
    let head = RequestHead(method: method.path, metadata: options.metadata, timeout: options.timeout)
    transport.unary(head, request: payload) { outcome in
      completion(
        Result { () throws(RPCError) in
          switch outcome {
          case .success(let response): return try Self.decode(response, as: Response.self)
          case .failure(let error): throw Self.callError(error)
          }
        })
    }
  }

  /// A transport's failure as the call's error.
  @usableFromInline
  static func callError(_ error: any Error) -> RPCError {
    switch error {
    case let error as RPCError: error
    case is CancellationError: RPCError(code: .cancelled, message: "the client cancelled the call")
    default: RPCError(code: .unknown, message: "\(error)", cause: error)
    }
  }

  /// A unary call's response message, or its status as an error.
  @usableFromInline
  static func decode<M: SwiftProtobuf.Message>(_ response: UnaryResponse, as type: M.Type) throws(RPCError) -> M {
    guard response.status.code == .ok else {
      throw RPCError(code: response.status.code, message: response.status.message, metadata: response.trailers)
    }
    guard let message = response.message else {
      throw RPCError(code: .internal, message: "the server ended the call without a response message")
    }
    return try MessageCoding.decode(M.self, from: message)
  }

  /// One request, then a stream of responses handed to `body` as they arrive.
  public func serverStreaming<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message, Result: Sendable>(
    _ method: MethodDescriptor,
    request: Request,
    responseType: Response.Type = Response.self,
    options: CallOptions = .defaults,
    body: (RPCMessages<Response>) async throws -> Result
  ) async throws(RPCError) -> Result {
    let payload = try MessageCoding.encode(request)
    return try await call(method, options: options, firstMessage: payload, endStream: true) { stream in
      try await body(Self.responses(Response.self, stream.inbound))
    }
  }

  /// Requests written by `requests`, then one response.
  public func clientStreaming<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
    _ method: MethodDescriptor,
    requestType: Request.Type = Request.self,
    responseType: Response.Type = Response.self,
    options: CallOptions = .defaults,
    requests: @escaping @Sendable (RPCWriter<Request>) async throws -> Void
  ) async throws(RPCError) -> Response {
    try await call(method, options: options, firstMessage: nil, endStream: false) { stream in
      do {
        try await requests(Self.writer(stream))
        try await stream.writer.halfClose()
      } catch let error as RPCError where error.isStreamClosed {
        // The server ended the call before taking every request (it refused them, or answered
        // early): what it said, already received, is the call's outcome, not the failed write.
      }
      return try await Self.singleResponse(Response.self, from: stream.inbound)
    }
  }

  /// Requests written by `requests` while `responses` reads the replies, concurrently.
  public func bidirectional<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message, Result: Sendable>(
    _ method: MethodDescriptor,
    requestType: Request.Type = Request.self,
    responseType: Response.Type = Response.self,
    options: CallOptions = .defaults,
    requests: @escaping @Sendable (RPCWriter<Request>) async throws -> Void,
    responses: @escaping @Sendable (RPCMessages<Response>) async throws -> Result
  ) async throws(RPCError) -> Result {
    try await call(method, options: options, firstMessage: nil, endStream: false) { stream in
      try await withThrowingTaskGroup(of: Void.self, returning: Result.self) { group in
        group.addTask {
          do {
            try await requests(Self.writer(stream))
            try await stream.writer.halfClose()
          } catch {
            // Once the responses are done the call is over: a request writer stopped by that
            // is not an error, nor is one stopped because the server ended the call (the
            // responses then end with the server's status). A writer that failed on its own
            // abandons the call.
            if Task.isCancelled || (error as? RPCError)?.isStreamClosed == true { return }
            stream.writer.cancel(RPCError(code: .cancelled, message: "the request writer failed: \(error)"))
            throw error
          }
        }
        let result = try await responses(Self.responses(Response.self, stream.inbound))
        group.cancelAll()
        try await group.waitForAll()
        return result
      }
    }
  }

  // MARK: Machinery

  private func call<Result>(
    _ method: MethodDescriptor,
    options: CallOptions,
    firstMessage: ByteBuffer?,
    endStream: Bool,
    _ body: (RPCClientStream) async throws -> Result
  ) async throws(RPCError) -> Result {
    if Task.isCancelled {
      throw RPCError(code: .cancelled, message: "the call was cancelled before it started")
    }
    let head = RequestHead(method: method.path, metadata: options.metadata, timeout: options.timeout)
    do {
      let stream = try await transport.openStream(head, firstMessage: firstMessage, endStream: endStream)
      // A body that returns (or throws) before the server's TRAILERS, a stream read only in
      // part, say, ends the call: otherwise the stream, and the server's handler waiting for
      // credit, would last as long as the connection. Nothing happens to a call already ended.
      defer { stream.writer.cancel(RPCError(code: .cancelled, message: "the client stopped reading the call")) }
      return try await withTaskCancellationHandler {
        try await body(stream)
      } onCancel: {
        stream.writer.cancel(RPCError(code: .cancelled, message: "the client cancelled the call"))
      }
    } catch let error as RPCError {
      throw error
    } catch is CancellationError {
      throw RPCError(code: .cancelled, message: "the client cancelled the call")
    } catch {
      throw RPCError(code: .unknown, message: "\(error)", cause: error)
    }
  }

  /// Reads response parts until the trailers; returns the single message or throws the status.
  private static func singleResponse<M: SwiftProtobuf.Message>(_ type: M.Type, from inbound: RPCInbound<ClientInboundPart>) async throws -> M {
    var message: ByteBuffer?
    for try await part in inbound {
      switch part {
      case .headers:
        continue
      case .message(let buffer):
        guard message == nil else {
          throw RPCError(code: .internal, message: "the server sent more than one response message")
        }
        message = buffer
      case .trailers(let status, let metadata):
        guard status.code == .ok else {
          throw RPCError(code: status.code, message: status.message, metadata: metadata)
        }
        guard let message else {
          throw RPCError(code: .internal, message: "the server ended the call without a response message")
        }
        return try MessageCoding.decode(M.self, from: message)
      }
    }
    throw endedWithoutTrailers()
  }

  private static func responses<M: SwiftProtobuf.Message>(_ type: M.Type, _ inbound: RPCInbound<ClientInboundPart>) -> RPCMessages<M> {
    RPCMessages {
      let box = IteratorBox(inbound.makeAsyncIterator())
      return {
        while let part = try await box.next() {
          switch part {
          case .headers:
            continue
          case .message(let buffer):
            return try MessageCoding.decode(M.self, from: buffer)
          case .trailers(let status, let metadata):
            guard status.code == .ok else {
              throw RPCError(code: status.code, message: status.message, metadata: metadata)
            }
            return nil
          }
        }
        throw endedWithoutTrailers()
      }
    }
  }

  /// The inbound side ended before TRAILERS: the task was cancelled (async streams end their
  /// iteration on cancellation) or the transport broke the contract.
  private static func endedWithoutTrailers() -> RPCError {
    if Task.isCancelled {
      return RPCError(code: .cancelled, message: "the client cancelled the call")
    }
    return RPCError(code: .internal, message: "the stream ended without trailers")
  }

  private static func writer<M: SwiftProtobuf.Message>(_ stream: RPCClientStream) -> RPCWriter<M> {
    RPCWriter { message in
      try await stream.writer.writeMessage(try MessageCoding.encode(message), endStream: false)
    }
  }
}
