import NIOCore
import Synchronization

/// Connects clients straight to an ``RPCServer`` in the same process, without frames or
/// sockets: the same call semantics (deadlines, cancellation, status) for tests of services.
public struct InProcessTransport: ClientTransport {
  private let server: RPCServer
  private let peer: PeerIdentity?

  /// Creates a transport that delivers every call to `server`, as `peer`.
  public init(server: RPCServer, peer: PeerIdentity? = nil) {
    self.server = server
    self.peer = peer
  }

  public func openStream(_ head: RequestHead, firstMessage: ByteBuffer?, endStream: Bool) async throws -> RPCClientStream {
    let (requests, requestContinuation) = AsyncThrowingStream<ByteBuffer, any Error>.makeStream()
    let (responses, responseContinuation) = AsyncThrowingStream<ClientInboundPart, any Error>.makeStream()
    let termination = StreamTermination()
    let state = InProcessStreamState(requests: requestContinuation, responses: responseContinuation, termination: termination)
    if let firstMessage { requestContinuation.yield(firstMessage) }
    if endStream { requestContinuation.finish() }
    let serverStream = RPCServerStream(
      head: head,
      peer: peer,
      inbound: RPCInbound(requests, creditReturn: nil),
      writer: InProcessServerWriter(state: state),
      termination: termination
    )
    let server = self.server
    server.serve(serverStream)
    if let timeout = head.timeout {
      let deadline = Task {
        // Capped at ~136 years: a deadline past `Int64.max` seconds from now traps in the
        // clock, and one this far off never comes either way.
        try await Task.sleep(for: min(timeout, .seconds(Int64(1) << 32)))
        state.terminate(RPCError(code: .deadlineExceeded, message: "the call's deadline of \(timeout) passed"), reason: .deadlineExceeded)
      }
      // The timer goes when the call ends, whichever way.
      Task {
        _ = await termination.wait()
        deadline.cancel()
      }
    }
    return RPCClientStream(inbound: RPCInbound(responses, creditReturn: nil), writer: InProcessClientWriter(state: state))
  }
}

/// Shared state of one in-process stream.
final class InProcessStreamState: Sendable {
  let requests: AsyncThrowingStream<ByteBuffer, any Error>.Continuation
  let responses: AsyncThrowingStream<ClientInboundPart, any Error>.Continuation
  let termination: StreamTermination
  private let finished = Mutex(false)

  init(
    requests: AsyncThrowingStream<ByteBuffer, any Error>.Continuation, responses: AsyncThrowingStream<ClientInboundPart, any Error>.Continuation,
    termination: StreamTermination
  ) {
    self.requests = requests
    self.responses = responses
    self.termination = termination
  }

  /// Marks the stream finished; returns false when it already was.
  func finish() -> Bool {
    finished.withLock { done in
      if done { return false }
      done = true
      return true
    }
  }

  var isFinished: Bool { finished.withLock { $0 } }

  func terminate(_ error: RPCError, reason: StreamTerminationReason) {
    guard finish() else { return }
    requests.finish(throwing: error)
    responses.finish(throwing: error)
    termination.signal(reason)
  }
}

struct InProcessServerWriter: ServerStreamWriter {
  let state: InProcessStreamState

  func writeHeaders(_ metadata: Metadata) async throws {
    guard !state.isFinished else { throw RPCError.streamClosed }
    state.responses.yield(.headers(metadata))
  }

  func writeMessage(_ message: ByteBuffer) async throws {
    guard !state.isFinished else { throw RPCError.streamClosed }
    state.responses.yield(.message(message))
  }

  func finish(lastMessage: ByteBuffer?, status: Status, metadata: Metadata) async throws {
    guard state.finish() else { throw RPCError.streamClosed }
    if let lastMessage { state.responses.yield(.message(lastMessage)) }
    state.responses.yield(.trailers(status, metadata))
    state.responses.finish()
    state.requests.finish()
    state.termination.signal(.finished)
  }
}

struct InProcessClientWriter: ClientStreamWriter {
  let state: InProcessStreamState

  func writeMessage(_ message: ByteBuffer, endStream: Bool) async throws {
    guard !state.isFinished else { throw RPCError.streamClosed }
    state.requests.yield(message)
    if endStream { state.requests.finish() }
  }

  func halfClose() async throws {
    state.requests.finish()
  }

  func cancel(_ error: RPCError) {
    state.terminate(error, reason: .reset(error.code))
  }
}
