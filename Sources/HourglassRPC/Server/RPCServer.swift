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

  /// Runs one call to completion. Cancelling the calling task cancels the handler.
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
    // The handler races the stream's termination (client RESET, deadline, connection loss);
    // whichever ends first cancels the other.
    await withTaskGroup(of: Void.self) { group in
      group.addTask { await handler(stream, context) }
      group.addTask { _ = await stream.termination.wait() }
      await group.next()
      group.cancelAll()
    }
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
