import NIOCore
import Synchronization

/// What the client sends to open a call.
public struct RequestHead: Sendable, Hashable {
  /// The method path, `/package.Service/Method`.
  public var method: String
  /// Request metadata.
  public var metadata: Metadata
  /// How long the server may spend on the call; `nil` for no deadline.
  public var timeout: Duration?

  /// Creates a request head.
  public init(method: String, metadata: Metadata = [:], timeout: Duration? = nil) {
    self.method = method
    self.metadata = metadata
    self.timeout = timeout
  }
}

/// Who is at the other end of a connection, as its transport authenticated it.
public struct PeerIdentity: Sendable, Hashable, CustomStringConvertible {
  /// The peer's name (for certificates: the subject's common name).
  public var name: String
  /// The peer's role (`user`, `executor`, `coordinator`), from its credentials.
  public var role: String

  /// Creates an identity.
  public init(name: String, role: String) {
    self.name = name
    self.role = role
  }

  public var description: String { "\(role):\(name)" }
}

/// What the client receives on a stream.
public enum ClientInboundPart: Sendable {
  /// Response metadata (at most once, before any message).
  case headers(Metadata)
  /// One whole response message.
  case message(ByteBuffer)
  /// The call's status and trailing metadata; always the last part.
  case trailers(Status, Metadata)
}

/// Why a server stream ended before its handler finished.
public enum StreamTerminationReason: Sendable, Hashable {
  /// The handler finished normally.
  case finished
  /// The client reset the stream (cancelled the call).
  case reset(StatusCode)
  /// The call's deadline passed.
  case deadlineExceeded
  /// The connection went away.
  case connectionClosed
}

/// The sending half of a server stream.
public protocol ServerStreamWriter: Sendable {
  /// Sends response metadata; optional, at most once, before the first message.
  func writeHeaders(_ metadata: Metadata) async throws
  /// Sends one response message; waits while the client has granted no credit.
  func writeMessage(_ message: ByteBuffer) async throws
  /// Ends the call with `status`, optionally sending a last message first in the same flush.
  func finish(lastMessage: ByteBuffer?, status: Status, metadata: Metadata) async throws
  /// Ends the call as ``finish(lastMessage:status:metadata:)`` does when that can be done at
  /// once, without waiting (nothing queued ahead, credit left, called on the connection's own
  /// thread), and returns `true`; otherwise does nothing and returns `false`, and the caller
  /// uses ``finish(lastMessage:status:metadata:)``.
  ///
  /// The usual end of a unary call, without the suspension point of an async call.
  func finishWithoutWaiting(lastMessage: ByteBuffer?, status: Status, metadata: Metadata) -> Bool

  /// Ends the call as ``finish(lastMessage:status:metadata:)`` does, from any thread and without
  /// waiting; `ended` runs once the status has been sent (or the stream turned out to be gone).
  /// A transport with an event loop does it with one job on that loop; the default
  /// implementation uses a task.
  func finish(lastMessage: ByteBuffer?, status: Status, metadata: Metadata, then ended: @escaping @Sendable () -> Void)
}

extension ServerStreamWriter {
  /// Never finishes without waiting: the caller uses ``finish(lastMessage:status:metadata:)``.
  public func finishWithoutWaiting(lastMessage: ByteBuffer?, status: Status, metadata: Metadata) -> Bool { false }

  /// Finishes in a task, then runs `ended`.
  public func finish(lastMessage: ByteBuffer?, status: Status, metadata: Metadata, then ended: @escaping @Sendable () -> Void) {
    if finishWithoutWaiting(lastMessage: lastMessage, status: status, metadata: metadata) {
      ended()
      return
    }
    Task {
      try? await finish(lastMessage: lastMessage, status: status, metadata: metadata)
      ended()
    }
  }
}

/// The sending half of a client stream.
public protocol ClientStreamWriter: Sendable {
  /// Sends one request message, half-closing with it when `endStream` is set; waits while the
  /// server has granted no credit.
  func writeMessage(_ message: ByteBuffer, endStream: Bool) async throws
  /// Half-closes: no more request messages.
  func halfClose() async throws
  /// Abandons the call: sends RESET and fails the inbound side locally with `error`.
  func cancel(_ error: RPCError)
}

/// The server's view of one call.
public struct RPCServerStream: Sendable {
  /// The request head.
  public var head: RequestHead
  /// The authenticated caller, when the transport has one.
  public var peer: PeerIdentity?
  /// The request messages; finishes when the client half-closes, throws when the stream resets.
  public var inbound: RPCInbound<ByteBuffer>
  /// The sending half.
  public var writer: any ServerStreamWriter
  /// Resolves when the stream ends for a reason other than the handler finishing.
  public var termination: StreamTermination

  /// Creates a server stream (transports do this).
  public init(head: RequestHead, peer: PeerIdentity?, inbound: RPCInbound<ByteBuffer>, writer: any ServerStreamWriter, termination: StreamTermination) {
    self.head = head
    self.peer = peer
    self.inbound = inbound
    self.writer = writer
    self.termination = termination
  }
}

/// The client's view of one call.
public struct RPCClientStream: Sendable {
  /// Everything the server sends.
  public var inbound: RPCInbound<ClientInboundPart>
  /// The sending half.
  public var writer: any ClientStreamWriter

  /// Creates a client stream (transports do this).
  public init(inbound: RPCInbound<ClientInboundPart>, writer: any ClientStreamWriter) {
    self.inbound = inbound
    self.writer = writer
  }
}

/// Something that can open client streams: a connection, a pool, the in-process transport.
public protocol ClientTransport: Sendable {
  /// Opens a stream; sends `firstMessage` with the headers (and half-closes when `endStream`).
  func openStream(_ head: RequestHead, firstMessage: ByteBuffer?, endStream: Bool) async throws -> RPCClientStream

  /// Makes a unary call: sends `request` and half-closes, then returns everything the server
  /// sent. Cancelling the calling task cancels the call (RESET). A transport may implement
  /// this more cheaply than through ``openStream(_:firstMessage:endStream:)``, which the
  /// default implementation uses.
  func unary(_ head: RequestHead, request: ByteBuffer) async throws -> UnaryResponse

  /// Makes a unary call without waiting for it: `completion` is told the outcome, once. A
  /// transport with an event loop starts the call and runs `completion` on it, without a task
  /// (what a load generator or a proxy making many calls wants); the default implementation
  /// runs ``unary(_:request:)`` in a task.
  func unary(_ head: RequestHead, request: ByteBuffer, completion: @escaping @Sendable (Result<UnaryResponse, any Error>) -> Void)
}

extension ClientTransport {
  /// Runs ``unary(_:request:)`` in a task and tells `completion` its outcome.
  public func unary(_ head: RequestHead, request: ByteBuffer, completion: @escaping @Sendable (Result<UnaryResponse, any Error>) -> Void) {
    completeInTask(completion) { try await unary(head, request: request) }
  }
}

/// Runs `body` in a task and tells `completion` its outcome: how a callback API falls back to
/// async code. (HourglassCore has the same for the domain's modules; the protocol does not
/// import the domain.)
package func completeInTask<Success: Sendable>(
  _ completion: @escaping @Sendable (Result<Success, any Error>) -> Void, _ body: @escaping @Sendable () async throws -> Success
) {
  Task {
    do {
      completion(.success(try await body()))
    } catch {
      completion(.failure(error))
    }
  }
}

/// Everything the server sent in answer to a unary call.
public struct UnaryResponse: Sendable {
  /// Response metadata (empty when the server sent no HEADERS).
  public var headers: Metadata
  /// The response message, if the server sent one.
  public var message: ByteBuffer?
  /// The call's status.
  public var status: Status
  /// Trailing metadata.
  public var trailers: Metadata

  /// Creates a response.
  public init(headers: Metadata, message: ByteBuffer?, status: Status, trailers: Metadata) {
    self.headers = headers
    self.message = message
    self.status = status
    self.trailers = trailers
  }
}

extension ClientTransport {
  public func unary(_ head: RequestHead, request: ByteBuffer) async throws -> UnaryResponse {
    let stream = try await openStream(head, firstMessage: request, endStream: true)
    return try await withTaskCancellationHandler {
      var headers = Metadata()
      var message: ByteBuffer?
      for try await part in stream.inbound {
        switch part {
        case .headers(let metadata):
          headers = metadata
        case .message(let buffer):
          guard message == nil else {
            throw RPCError(code: .internal, message: "the server sent more than one response message")
          }
          message = buffer
        case .trailers(let status, let metadata):
          return UnaryResponse(headers: headers, message: message, status: status, trailers: metadata)
        }
      }
      // Async streams end their iteration when the task is cancelled.
      if Task.isCancelled {
        throw RPCError(code: .cancelled, message: "the client cancelled the call")
      }
      throw RPCError(code: .internal, message: "the stream ended without trailers")
    } onCancel: {
      stream.writer.cancel(RPCError(code: .cancelled, message: "the client cancelled the call"))
    }
  }
}

/// An async sequence of what arrives on one stream.
///
/// Consuming a message returns its credit to the sender (in batches), which is how the
/// protocol's message-based flow control reaches the application: a slow consumer stops the
/// sender after `initial_stream_credit` messages.
public struct RPCInbound<Element: Sendable>: AsyncSequence, Sendable {
  public typealias Failure = any Error

  private enum Source: Sendable {
    case stream(AsyncThrowingStream<Element, any Error>)
    case queue(InboundQueue<Element>)
    /// Everything there will be: one element, already received.
    case single(Element)
  }

  private let source: Source
  private let creditReturn: CreditReturn?
  private let costsCredit: @Sendable (Element) -> Bool

  /// Wraps a stream; `creditReturn` is told about each consumed element for which
  /// `costsCredit` is true (messages, not headers or trailers).
  public init(_ base: AsyncThrowingStream<Element, any Error>, creditReturn: CreditReturn?, costsCredit: @escaping @Sendable (Element) -> Bool = { _ in true })
  {
    self.source = .stream(base)
    self.creditReturn = creditReturn
    self.costsCredit = costsCredit
  }

  /// Reads from a queue the event loop fills.
  init(_ queue: InboundQueue<Element>, creditReturn: CreditReturn?, costsCredit: @escaping @Sendable (Element) -> Bool = { _ in true }) {
    self.source = .queue(queue)
    self.creditReturn = creditReturn
    self.costsCredit = costsCredit
  }

  /// Holds the one element a peer sent before half-closing (a unary call's request): no
  /// queue, and no credit to return, since nothing more can arrive.
  init(single element: Element) {
    self.source = .single(element)
    self.creditReturn = nil
    self.costsCredit = { _ in false }
  }

  /// The one element, when the sequence was made with it (``init(single:)``): a unary call's
  /// request, read without an async call.
  @usableFromInline
  var singleElement: Element? {
    if case .single(let element) = source { return element }
    return nil
  }

  public func makeAsyncIterator() -> Iterator {
    switch source {
    case .stream(let stream):
      Iterator(base: .stream(stream.makeAsyncIterator()), creditReturn: creditReturn, costsCredit: costsCredit)
    case .queue(let queue):
      Iterator(base: .queue(queue), creditReturn: creditReturn, costsCredit: costsCredit)
    case .single(let element):
      Iterator(base: .single(element), creditReturn: nil, costsCredit: costsCredit)
    }
  }

  /// The iterator.
  public struct Iterator: AsyncIteratorProtocol {
    enum Base {
      case stream(AsyncThrowingStream<Element, any Error>.AsyncIterator)
      case queue(InboundQueue<Element>)
      case single(Element?)
    }

    var base: Base
    let creditReturn: CreditReturn?
    let costsCredit: @Sendable (Element) -> Bool

    public mutating func next() async throws -> Element? {
      let element: Element?
      switch base {
      case .stream(var iterator):
        element = try await iterator.next(isolation: #isolation)
        base = .stream(iterator)
      case .queue(let queue):
        element = try await queue.next()
      case .single(let remaining):
        base = .single(nil)
        return remaining
      }
      if let element, let creditReturn, costsCredit(element) { creditReturn.consumed() }
      return element
    }
  }
}

/// Counts consumed messages and hands credit back to the sender in batches.
public final class CreditReturn: Sendable {
  private let pending = Atomic<Int>(0)
  private let batch: Int
  private let grant: @Sendable (Int) -> Void

  /// Creates a counter that calls `grant` with `batch` credits every `batch` messages.
  public init(batch: Int, grant: @escaping @Sendable (Int) -> Void) {
    self.batch = max(1, batch)
    self.grant = grant
  }

  /// One element was consumed.
  public func consumed() {
    let now = pending.add(1, ordering: .relaxed).newValue
    if now % batch == 0 {
      grant(batch)
    }
  }
}

/// A one-shot signal that a server stream ended early, and why. Any number of tasks may wait.
///
/// The task running the stream's handler can be bound to it with ``cancelOnEarlyEnd(_:)``:
/// that task is then cancelled as soon as the stream ends for any reason but `.finished`.
///
/// Not final only so that a transport's record of a stream (in this module) can be the
/// stream's termination too, one object instead of two; it cannot be subclassed outside this
/// module. Unchecked: its one stored property is a `Mutex`.
public class StreamTermination: @unchecked Sendable {
  private struct State {
    var reason: StreamTerminationReason?
    var handlerTask: Task<Void, Never>?
    var waiters = [UInt64: CheckedContinuation<StreamTerminationReason, Never>]()
    var nextWaiter: UInt64 = 0
  }

  private let state = Mutex(State())

  /// Creates an unresolved signal.
  public init() {}

  /// Resolves the signal; later calls do nothing.
  public func signal(_ reason: StreamTerminationReason) {
    let (waiters, task): ([CheckedContinuation<StreamTerminationReason, Never>], Task<Void, Never>?) = state.withLock { state in
      guard state.reason == nil else { return ([], nil) }
      state.reason = reason
      let task = state.handlerTask
      state.handlerTask = nil
      guard !state.waiters.isEmpty else { return ([], task) }
      let waiting = Array(state.waiters.values)
      state.waiters.removeAll()
      return (waiting, task)
    }
    if reason != .finished { task?.cancel() }
    for waiter in waiters { waiter.resume(returning: reason) }
  }

  /// Resolves the signal as `.finished` if it is not resolved yet, and returns the reason it
  /// already had (`nil` if none): what a handler's task does when the handler returns, in one
  /// look at the state.
  func signalFinished() -> StreamTerminationReason? {
    let (earlier, waiters): (StreamTerminationReason?, [CheckedContinuation<StreamTerminationReason, Never>]) = state.withLock { state in
      if let reason = state.reason { return (reason, []) }
      state.reason = .finished
      state.handlerTask = nil
      guard !state.waiters.isEmpty else { return (nil, []) }
      let waiting = Array(state.waiters.values)
      state.waiters.removeAll()
      return (nil, waiting)
    }
    for waiter in waiters { waiter.resume(returning: .finished) }
    return earlier
  }

  /// Cancels `task` when the stream ends early (at once if it already has); forgets it when
  /// the stream finishes normally.
  public func cancelOnEarlyEnd(_ task: Task<Void, Never>) {
    let endedEarly: Bool = state.withLock { state in
      if let reason = state.reason { return reason != .finished }
      state.handlerTask = task
      return false
    }
    if endedEarly { task.cancel() }
  }

  /// The reason, once resolved.
  public var reason: StreamTerminationReason? {
    state.withLock { $0.reason }
  }

  /// Waits for the signal; a waiter whose task is cancelled returns `.finished` without
  /// resolving the signal for anyone else.
  public func wait() async -> StreamTerminationReason {
    let id = state.withLock { state -> UInt64 in
      state.nextWaiter += 1
      return state.nextWaiter
    }
    return await withTaskCancellationHandler {
      await withCheckedContinuation { (continuation: CheckedContinuation<StreamTerminationReason, Never>) in
        let resolved: StreamTerminationReason? = state.withLock { state in
          if let reason = state.reason { return reason }
          if Task.isCancelled { return .finished }
          state.waiters[id] = continuation
          return nil
        }
        if let resolved { continuation.resume(returning: resolved) }
      }
    } onCancel: {
      let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
      waiter?.resume(returning: .finished)
    }
  }
}
