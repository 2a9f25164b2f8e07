import Logging
import NIOCore
import Synchronization

/// Serves calls from any transport: finds each stream's handler, runs it, and stops it when the
/// client cancels or the deadline passes.
public struct RPCServer: Sendable {
  /// The handlers.
  public var router: RPCRouter { core.router }
  /// Everything a call's task needs from the server, behind one reference.
  private let core: Core

  /// Creates a server.
  /// - Parameters:
  ///   - router: the handlers.
  ///   - logger: where call logs go.
  ///   - onCallFinished: told about every call when it ends (for metrics).
  public init(router: RPCRouter, logger: Logger, onCallFinished: (@Sendable (RPCServerStream, ServerContext, Status, Duration) -> Void)? = nil) {
    self.core = Core(router: router, logger: logger, interceptor: onCallFinished)
  }

  /// Starts a task that runs one call (as ``handle(_:)`` does) and is cancelled as soon as the
  /// stream ends early: a client RESET, the deadline, or the connection closing.
  ///
  /// - Parameter executorPreference: where the handler runs; a transport passes the executor
  ///   of the connection's event loop so that the call is read, handled and answered on one
  ///   thread, without hops.
  @discardableResult
  public func serve(_ stream: RPCServerStream, executorPreference: (any TaskExecutor)? = nil) -> Task<Void, Never> {
    // Never nil: a call is answered on the loop only when the transport says it is on it.
    serve(stream, executorPreference: executorPreference, onLoop: false, whenDone: nil)!
  }

  /// ``serve(_:executorPreference:)``, then `whenDone` once the call has ended (a transport
  /// counting its running handlers). Returns the call's task; nil for a call answered on the
  /// loop (``RPCRouter/registerUnaryOnEventLoop(_:answering:)``), which has none.
  ///
  /// The call is set up before its task starts, and the task runs the handler itself rather
  /// than through ``handle(_:)``: one async frame and one executor check fewer per call, and a
  /// task closure that holds one reference to the call instead of a copy of its stream.
  ///
  /// - Parameter onLoop: whether this is called on the event loop of the stream's connection,
  ///   whose executor `executorPreference` is: a handler registered to run on the loop then
  ///   runs at once, and any other handler's task starts at once.
  @discardableResult
  package func serve(
    _ stream: consuming RPCServerStream, executorPreference: (any TaskExecutor)?, onLoop: Bool, whenDone: (@Sendable () -> Void)?
  ) -> Task<Void, Never>? {
    let core = self.core
    // The stream moves into the call's recorder: no copy of its references.
    let call = core.begin(stream)
    // A handler that runs on the loop, called on the loop with its request at hand: no task.
    if onLoop, let runOnLoop = call.route.onLoop, let request = call.incoming.inbound.singleElement {
      runOnLoop(request, call.context, LoopAnswer(core: core, call: call, whenDone: whenDone))
      return nil
    }
    let run: @concurrent @Sendable () async -> Void
    if let unary = call.route.unary, let request = call.incoming.inbound.singleElement {
      // A unary call with its request: the handler gets the request and the context, not a
      // stream, and the call ends through its recorder directly.
      run = {
        await unary(request, call.context).send(on: call)
        core.end(call)
        whenDone?()
      }
    } else {
      run = {
        let (stream, context) = call.handlerArguments()
        await call.route.handler(stream, context)
        core.end(call)
        whenDone?()
      }
    }
    // On the loop that reads the call, whose executor the task prefers, the task starts at
    // once, here, and runs until it first suspends (most unary handlers never do): no job to
    // enqueue and run later. Anywhere else it starts as usual, on its preferred executor.
    let task = onLoop ? Task.immediate(executorPreference: executorPreference, operation: run) : Task(executorPreference: executorPreference, operation: run)
    // A call that has already ended is not cancelled.
    call.incoming.termination.cancelOnEarlyEnd(task)
    return task
  }

  /// Runs one call to completion in the calling task. Cancelling that task cancels the
  /// handler; the caller cancels it when `stream.termination` reports an early end, as
  /// ``serve(_:executorPreference:)`` does.
  ///
  /// `onCallFinished` runs once per call, before its final status goes to the client (so a
  /// client that saw the status also sees the call in the metrics); the call's log line follows.
  public func handle(_ incoming: RPCServerStream) async {
    let call = core.begin(incoming)
    let (stream, context) = call.handlerArguments()
    // A client RESET, the deadline or connection loss cancels this task (see `serve`), which
    // the handler sees as cancellation.
    await call.route.handler(stream, context)
    core.end(call)
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

  /// The answer of a call handled on the loop: ends the call on its stream, then settles,
  /// reports and logs it as a task's call is once its handler returns.
  ///
  /// Unchecked: constants only.
  private final class LoopAnswer: UnaryAnswer, @unchecked Sendable {
    private let core: Core
    private let call: RecordingWriter
    private let whenDone: (@Sendable () -> Void)?

    init(core: Core, call: RecordingWriter, whenDone: (@Sendable () -> Void)?) {
      self.core = core
      self.call = call
      self.whenDone = whenDone
      super.init(annotations: call)
    }

    deinit {
      // `deliver` must not keep `self`, which is being destroyed: it captures only constants.
      if let dropped = endingIfDropped { deliver(dropped) }
    }

    override func deliver(_ ending: UnaryEnding) {
      // The recorder is the handler's writer: it remembers the status for `end`.
      if call.finishWithoutWaiting(lastMessage: ending.last, status: ending.status, metadata: ending.metadata) {
        core.end(call)
        whenDone?()
        return
      }
      // Off the connection's thread, or the reply must wait for credit.
      let (core, call, whenDone) = (self.core, self.call, self.whenDone)
      call.finish(lastMessage: ending.last, status: ending.status, metadata: ending.metadata) {
        core.end(call)
        whenDone?()
      }
    }
  }

  /// What every call needs from the server.
  private final class Core: Sendable {
    let router: RPCRouter
    let logger: Logger
    /// `logger.logLevel`, read once: the server's copy of the logger cannot change, and asking
    /// its handler on every call cost ~0.5% of a small call's CPU.
    let logLevel: Logger.Level
    let interceptor: (@Sendable (RPCServerStream, ServerContext, Status, Duration) -> Void)?

    init(router: RPCRouter, logger: Logger, interceptor: (@Sendable (RPCServerStream, ServerContext, Status, Duration) -> Void)?) {
      self.router = router
      self.logger = logger
      self.logLevel = logger.logLevel
      self.interceptor = interceptor
    }

    /// Sets a call up: its recorder (which is also its annotations) and its handler.
    func begin(_ incoming: consuming RPCServerStream) -> RecordingWriter {
      let route = router.route(incoming.head.method) ?? Self.unimplemented
      return RecordingWriter(incoming, route: route, start: ContinuousClock.now, interceptor: interceptor)
    }

    /// The handler of a method no one registered.
    private static let unimplemented = RPCRouter.Route { stream, _ in
      try? await stream.writer.finish(lastMessage: nil, status: Status(code: .unimplemented, message: "unknown method \(stream.head.method)"), metadata: [:])
    }

    /// Ends a call whose handler returned: settles its status, reports and logs it. (The
    /// stream is read from the recorder, not passed: a copy of it retains each of its parts.)
    func end(_ call: RecordingWriter) {
      let reason = call.incoming.termination.signalFinished()
      let status = RPCServer.status(ending: reason) ?? call.status ?? Status(code: .unknown)
      call.report(status)
      log(call, status)
    }

    /// One line per call: at info, or at error when the server is at fault.
    private func log(_ call: RecordingWriter, _ status: Status) {
      let serverFault = status.code == .unknown || status.code == .internal || status.code == .dataLoss
      let level: Logger.Level = serverFault ? .error : .info
      // The line's metadata costs more than the rest of a small call: build it only when logged.
      guard logLevel <= level else { return }
      let duration = ContinuousClock.now - call.start
      let stream = call.incoming
      var metadata = call.metadata
      metadata["hourglass.method"] = "\(stream.head.method)"
      metadata["hourglass.status"] = "\(status.code)"
      if status.code != .ok, !status.message.isEmpty { metadata["hourglass.status_message"] = "\(status.message)" }
      metadata["hourglass.duration_ms"] = "\(Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds / 1_000_000_000) / 1_000_000)"
      metadata["hourglass.caller"] = "\(stream.peer?.description ?? "-")"
      logger.log(level: level, "rpc", metadata: metadata)
    }
  }
}

/// One call on the server, and the writer its handler gets: passes everything to the stream's
/// own writer, remembers the status the call ended with, and reports the call
/// (`onCallFinished`) before that status leaves. It is also the call's ``CallAnnotations``: one
/// object per call for all of this, and a class so that it fits in the `any ServerStreamWriter`
/// existential without a box.
final class RecordingWriter: CallAnnotations, ServerStreamWriter, @unchecked Sendable {
  // Unchecked: every stored property is a constant or a `Mutex`.
  /// The stream as the transport made it (with its own writer).
  let incoming: RPCServerStream
  /// The method's handler.
  let route: RPCRouter.Route
  let start: ContinuousClock.Instant
  /// `onCallFinished`, if there is one.
  private let interceptor: (@Sendable (RPCServerStream, ServerContext, Status, Duration) -> Void)?
  private let value = Mutex<(status: Status?, reported: Bool)>((nil, false))

  init(
    _ incoming: consuming RPCServerStream, route: RPCRouter.Route, start: ContinuousClock.Instant,
    interceptor: (@Sendable (RPCServerStream, ServerContext, Status, Duration) -> Void)?
  ) {
    self.incoming = incoming
    self.route = route
    self.start = start
    self.interceptor = interceptor
  }

  /// What the handler is called with: the stream with this object as its writer, and the
  /// context with this object as its annotations. (Made when needed rather than stored, which
  /// would make each refer to this object and this object to them.)
  func handlerArguments() -> (RPCServerStream, ServerContext) {
    var stream = incoming
    stream.writer = self
    return (stream, context)
  }

  /// The handler's context: this object, which it reads its values from and which is its
  /// annotations.
  var context: ServerContext { ServerContext(source: self) }

  /// The status the handler ended the call with, if it did.
  var status: Status? { value.withLock { $0.status } }

  /// Tells `onCallFinished` about the call, the first time only.
  func report(_ status: Status) {
    guard let interceptor else { return }
    let first: Bool = value.withLock { state in
      defer { state.reported = true }
      return !state.reported
    }
    guard first else { return }
    interceptor(incoming, context, status, ContinuousClock.now - start)
  }

  func writeHeaders(_ metadata: Metadata) async throws { try await incoming.writer.writeHeaders(metadata) }
  func writeMessage(_ message: ByteBuffer) async throws { try await incoming.writer.writeMessage(message) }
  func finish(lastMessage: ByteBuffer?, status: Status, metadata: Metadata) async throws {
    record(status)
    try await incoming.writer.finish(lastMessage: lastMessage, status: status, metadata: metadata)
  }

  func finishWithoutWaiting(lastMessage: ByteBuffer?, status: Status, metadata: Metadata) -> Bool {
    // Recorded and reported even when the call cannot end at once: `finish`, which the caller
    // then uses, would record the same status, and reports only once.
    record(status)
    return incoming.writer.finishWithoutWaiting(lastMessage: lastMessage, status: status, metadata: metadata)
  }

  func finish(lastMessage: ByteBuffer?, status: Status, metadata: Metadata, then ended: @escaping @Sendable () -> Void) {
    record(status)
    incoming.writer.finish(lastMessage: lastMessage, status: status, metadata: metadata, then: ended)
  }

  /// Remembers the status the handler ended the call with and reports the call.
  private func record(_ status: Status) {
    value.withLock { if $0.status == nil { $0.status = status } }
    guard interceptor != nil else { return }
    // A call the client reset or whose deadline passed ends with that status, whatever the
    // handler answered after being cancelled.
    report(RPCServer.status(ending: incoming.termination.reason) ?? status)
  }
}

extension RecordingWriter: ServerContextSource {
  var callMethod: String { incoming.head.method }
  var callMetadata: Metadata { incoming.head.metadata }
  var callPeer: PeerIdentity? { incoming.peer }
  var callTimeout: Duration? { incoming.head.timeout }
  var callAnnotations: CallAnnotations { self }
}
