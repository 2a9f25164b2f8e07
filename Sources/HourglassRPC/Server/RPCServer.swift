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
  ///
  /// `onCallFinished` runs once per call, before its final status goes to the client (so a
  /// client that saw the status also sees the call in the metrics); the call's log line follows.
  public func handle(_ incoming: RPCServerStream) async {
    let start = ContinuousClock.now
    // One object records the call's outcome and holds its annotations.
    let outcome = RecordingWriter(incoming, start: start, interceptor: interceptor)
    let context = ServerContext(
      method: incoming.head.method, metadata: incoming.head.metadata, peer: incoming.peer, timeout: incoming.head.timeout, annotations: outcome)
    var stream = incoming
    stream.writer = outcome
    guard let handler = router[stream.head.method] else {
      try? await stream.writer.finish(lastMessage: nil, status: Status(code: .unimplemented, message: "unknown method \(stream.head.method)"), metadata: [:])
      log(stream, context, Status(code: .unimplemented), start)
      return
    }
    // A client RESET, the deadline or connection loss cancels this task (see `serve`), which
    // the handler sees as cancellation.
    await handler(stream, context)
    let reason = stream.termination.signalFinished()
    let status = Self.status(ending: reason) ?? outcome.status ?? Status(code: .unknown)
    outcome.report(status)
    log(stream, context, status, start)
  }

  /// The status of a call that ended early for `reason`, if it did.
  static func status(ending reason: StreamTerminationReason?) -> Status? {
    switch reason {
    case .reset(let code)?: Status(code: code, message: "reset by the client")
    case .deadlineExceeded?: Status(code: .deadlineExceeded)
    case .connectionClosed?: Status(code: .unavailable, message: "connection closed")
    case .finished?, nil: nil
    }
  }

  /// One line per call: at info, or at error when the server is at fault.
  private func log(_ stream: RPCServerStream, _ context: ServerContext, _ status: Status, _ start: ContinuousClock.Instant) {
    let serverFault = status.code == .unknown || status.code == .internal || status.code == .dataLoss
    let level: Logger.Level = serverFault ? .error : .info
    // The line's metadata costs more than the rest of a small call: build it only when logged.
    guard logger.logLevel <= level else { return }
    let duration = ContinuousClock.now - start
    var metadata = context.annotations.metadata
    metadata["hourglass.method"] = "\(stream.head.method)"
    metadata["hourglass.status"] = "\(status.code)"
    if status.code != .ok, !status.message.isEmpty { metadata["hourglass.status_message"] = "\(status.message)" }
    metadata["hourglass.duration_ms"] = "\(Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds / 1_000_000_000) / 1_000_000)"
    metadata["hourglass.caller"] = "\(stream.peer?.description ?? "-")"
    logger.log(level: level, "rpc", metadata: metadata)
  }
}

/// The writer a handler gets: passes everything to the stream's own writer, remembers the
/// status the call ended with, and reports the call (`onCallFinished`) before that status
/// leaves. It is also the call's ``CallAnnotations``: one object per call for both, and a class
/// so that it fits in the `any ServerStreamWriter` existential without a box.
final class RecordingWriter: CallAnnotations, ServerStreamWriter, @unchecked Sendable {
  // Unchecked: every stored property is a constant or a `Mutex`.
  private let writer: any ServerStreamWriter
  private let termination: StreamTermination
  /// What `onCallFinished` is told about, kept only when there is one.
  private let observed: (interceptor: @Sendable (RPCServerStream, ServerContext, Status, Duration) -> Void, stream: RPCServerStream)?
  private let start: ContinuousClock.Instant
  private let value = Mutex<(status: Status?, reported: Bool)>((nil, false))

  init(_ incoming: RPCServerStream, start: ContinuousClock.Instant, interceptor: (@Sendable (RPCServerStream, ServerContext, Status, Duration) -> Void)?) {
    self.writer = incoming.writer
    self.termination = incoming.termination
    self.observed = interceptor.map { ($0, incoming) }
    self.start = start
  }

  /// The status the handler ended the call with, if it did.
  var status: Status? { value.withLock { $0.status } }

  /// Tells `onCallFinished` about the call, the first time only.
  func report(_ status: Status) {
    guard let observed else { return }
    let first: Bool = value.withLock { state in
      defer { state.reported = true }
      return !state.reported
    }
    guard first else { return }
    let stream = observed.stream
    let context = ServerContext(
      method: stream.head.method, metadata: stream.head.metadata, peer: stream.peer, timeout: stream.head.timeout, annotations: self)
    observed.interceptor(stream, context, status, ContinuousClock.now - start)
  }

  func writeHeaders(_ metadata: Metadata) async throws { try await writer.writeHeaders(metadata) }
  func writeMessage(_ message: ByteBuffer) async throws { try await writer.writeMessage(message) }
  func finish(lastMessage: ByteBuffer?, status: Status, metadata: Metadata) async throws {
    record(status)
    try await writer.finish(lastMessage: lastMessage, status: status, metadata: metadata)
  }

  func finishWithoutWaiting(lastMessage: ByteBuffer?, status: Status, metadata: Metadata) -> Bool {
    // Recorded and reported even when the call cannot end at once: `finish`, which the caller
    // then uses, would record the same status, and reports only once.
    record(status)
    return writer.finishWithoutWaiting(lastMessage: lastMessage, status: status, metadata: metadata)
  }

  /// Remembers the status the handler ended the call with and reports the call.
  private func record(_ status: Status) {
    value.withLock { if $0.status == nil { $0.status = status } }
    guard observed != nil else { return }
    // A call the client reset or whose deadline passed ends with that status, whatever the
    // handler answered after being cancelled.
    report(RPCServer.status(ending: termination.reason) ?? status)
  }
}
