import Logging
import NIOCore
import Synchronization

/// Serves calls from any transport: finds each stream's handler, runs it, and stops it when the
/// client cancels or the deadline passes.
public struct RPCServer: Sendable {
  /// The handlers.
  public let router: RPCRouter
  private let logger: Logger
  private let interceptor: (@Sendable (RPCServerStream, ServerContext, Status, Duration) -> Void)?

  /// Creates a server.
  /// - Parameters:
  ///   - router: the handlers.
  ///   - logger: where call logs go.
  ///   - onCallFinished: told about every call when it ends (for metrics).
  public init(router: RPCRouter, logger: Logger, onCallFinished: (@Sendable (RPCServerStream, ServerContext, Status, Duration) -> Void)? = nil) {
    self.router = router
    self.logger = logger
    self.interceptor = onCallFinished
  }

  /// Starts a task that runs one call (see ``handle(_:)``) and is cancelled as soon as the
  /// stream ends early: a client RESET, the deadline, or the connection closing.
  ///
  /// - Parameter executorPreference: where the handler runs; a transport passes the executor
  ///   of the connection's event loop so that the call is read, handled and answered on one
  ///   thread, without hops.
  @discardableResult
  public func serve(_ stream: RPCServerStream, executorPreference: (any TaskExecutor)? = nil) -> Task<Void, Never> {
    let task = Task(executorPreference: executorPreference) { await self.handle(stream) }
    stream.termination.cancelOnEarlyEnd(task)
    return task
  }

  /// Runs one call to completion in the calling task. Cancelling that task cancels the
  /// handler; the caller cancels it when `stream.termination` reports an early end, as
  /// ``serve(_:executorPreference:)`` does.
  public func handle(_ incoming: RPCServerStream) async {
    let start = ContinuousClock.now
    let outcome = StatusRecorder()
    var observed = incoming
    observed.writer = RecordingWriter(base: incoming.writer, recorder: outcome)
    let stream = observed
    let context = ServerContext(method: stream.head.method, metadata: stream.head.metadata, peer: stream.peer, timeout: stream.head.timeout)
    guard let handler = router[stream.head.method] else {
      try? await stream.writer.finish(lastMessage: nil, status: Status(code: .unimplemented, message: "unknown method \(stream.head.method)"), metadata: [:])
      logger.info("rpc", metadata: ["hourglass.method": "\(stream.head.method)", "hourglass.status": "UNIMPLEMENTED"])
      return
    }
    // A client RESET, the deadline or connection loss cancels this task (see `serve`), which
    // the handler sees as cancellation.
    await handler(stream, context)
    let reason = stream.termination.reason
    stream.termination.signal(.finished)
    let status: Status
    switch reason {
    case .reset(let code)?: status = Status(code: code, message: "reset by the client")
    case .deadlineExceeded?: status = Status(code: .deadlineExceeded)
    case .connectionClosed?: status = Status(code: .unavailable, message: "connection closed")
    case .finished?, nil: status = outcome.status ?? Status(code: .unknown)
    }
    let duration = ContinuousClock.now - start
    interceptor?(stream, context, status, duration)
    logger.info(
      "rpc",
      metadata: [
        "hourglass.method": "\(stream.head.method)",
        "hourglass.status": "\(status.code)",
        "hourglass.duration_ms": "\(Double(duration.components.attoseconds / 1_000_000_000_000 + duration.components.seconds * 1_000_000) / 1000)",
        "hourglass.caller": "\(stream.peer?.description ?? "-")",
      ]
    )
  }
}

/// Remembers the status a handler ended its call with.
final class StatusRecorder: Sendable {
  private let value = Mutex<Status?>(nil)
  var status: Status? { value.withLock { $0 } }
  func record(_ status: Status) { value.withLock { if $0 == nil { $0 = status } } }
}

/// A writer that tells a ``StatusRecorder`` the final status.
struct RecordingWriter: ServerStreamWriter {
  let base: any ServerStreamWriter
  let recorder: StatusRecorder

  func writeHeaders(_ metadata: Metadata) async throws { try await base.writeHeaders(metadata) }
  func writeMessage(_ message: ByteBuffer) async throws { try await base.writeMessage(message) }
  func finish(lastMessage: ByteBuffer?, status: Status, metadata: Metadata) async throws {
    recorder.record(status)
    try await base.finish(lastMessage: lastMessage, status: status, metadata: metadata)
  }
}
