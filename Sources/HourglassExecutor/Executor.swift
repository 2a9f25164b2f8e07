import CoreMetrics
import Foundation
import HourglassCore
import HourglassProto
import HourglassRPC
import Logging
import ServiceLifecycle
import Synchronization

/// The worker runtime: keeps an `ExecutorService/Connect` stream to every coordinator it is
/// given (and, with a ``CoordinatorDiscovery``, to every coordinator the cluster announces),
/// shares its slots between them as credits, runs the leases it receives with the named
/// operator, renews them, reports results, and fences itself when it cannot renew in time.
///
/// A `Service`: `run()` returns after a graceful shutdown has drained the running tasks (or
/// the drain grace has run out and they were killed); cancelling `run()` kills every task at
/// once. One instance runs once.
///
/// All timers use the injected clock (`ContinuousClock` in production, a manual clock in
/// tests), which must be monotonic: leases are counted on it.
public final class Executor<C: Clock>: Service, Sendable where C.Duration == Duration {
  /// The method the executor calls.
  public static var connectMethod: MethodDescriptor {
    MethodDescriptor(service: "hourglass.v1.ExecutorService", method: "Connect")
  }

  enum Event: Sendable {
    /// A coordinator's message on a stream, with what it took from that stream's inbound
    /// budget (given back once the message is handled) and when it was read: a lease is counted
    /// from then, not from when the message's turn came (behind up to the budget of others).
    case inbound(UInt64, Hourglass_V1_CoordinatorMessage, InboundTicket, readAt: C.Instant)
    case connectionEnded(UInt64, String?)
    /// The timer task woke: fire what is due. The number names the sleeper.
    case timersDue(UInt64)
    case runFinished(RunKey, RunOutcome)
    case shutdown
  }

  /// What a coordinator message weighs against ``ExecutorConfiguration/inboundBytesPerStream``:
  /// the binaries and arguments of the leases it carries, plus a little for the rest.
  static func inboundBytes(of message: Hourglass_V1_CoordinatorMessage) -> Int {
    func weight(_ grant: Hourglass_V1_LeaseGrant) -> Int { 256 + grant.blob.count + grant.arguments.reduce(0) { $0 + $1.utf8.count + 4 } }
    switch message.kind {
    case .lease(let grant)?: return weight(grant)
    case .leases(let batch)?: return batch.grants.reduce(256) { $0 + weight($1) }
    default: return 256
    }
  }

  /// A message's share of its stream's inbound budget, given back once handled.
  struct InboundTicket: Sendable {
    let budget: InFlightBudget
    let bytes: Int

    /// The message has been handled: its share goes back to the stream's budget.
    func handled() { budget.give(items: 1, bytes: bytes) }
  }

  private let configuration: ExecutorConfiguration
  private let transports: [any ClientTransport]
  private let discovery: CoordinatorDiscovery?
  private let clock: C
  private let logger: Logger
  private let customOperators: [any Operator]
  private let metrics: ExecutorMetrics
  private let events: AsyncStream<Event>
  private let sink: AsyncStream<Event>.Continuation
  private let started = Atomic(false)

  /// Creates an executor.
  /// - Parameters:
  ///   - configuration: checked when `run()` starts.
  ///   - transports: how to reach each coordinator (`RPCTLSConnection`; `InProcessTransport` in
  ///     tests), at least one. The executor holds a stream to every one of them at once.
  ///   - clock: the monotonic clock every timer and lease is counted on.
  ///   - logger: where the executor logs (metadata keys `hourglass.*`).
  ///   - operators: operators beside the built-in `exec` and `noop`; one with a built-in's name
  ///     replaces it. Only those named in `configuration.operators` are offered.
  ///   - metricsFactory: where the executor's metrics go (docs/operations.md): a Prometheus
  ///     registry's factory, or the global `MetricsSystem`'s by default (a no-op unless the
  ///     program bootstrapped it).
  ///   - discovery: how to reach the coordinators a cluster announces besides `transports`;
  ///     nil connects to `transports` only.
  public init(
    configuration: ExecutorConfiguration, transports: [any ClientTransport], clock: C, logger: Logger, operators: [any Operator] = [],
    metricsFactory: any MetricsFactory = MetricsSystem.factory, discovery: CoordinatorDiscovery? = nil
  ) {
    precondition(!transports.isEmpty, "an executor needs at least one coordinator")
    self.configuration = configuration
    self.transports = transports
    self.discovery = discovery
    self.clock = clock
    self.logger = logger
    self.customOperators = operators
    self.metrics = ExecutorMetrics(factory: metricsFactory, executorID: configuration.executorID)
    (events, sink) = AsyncStream<Event>.makeStream()
  }

  /// Begins a graceful shutdown, as a `ServiceGroup`'s shutdown signal would.
  public func drain() {
    sink.yield(.shutdown)
  }

  /// The operators the configuration names, built-in or custom; `exec` makes its runs'
  /// directories in `runDirectories` (``ExecutorConfiguration/temporaryDirectory`` if nil).
  func resolveOperators(runDirectories: String? = nil) throws(ExecutorConfigurationError) -> [String: any Operator] {
    var exec = configuration.exec
    exec.temporaryRoot = runDirectories ?? configuration.temporaryDirectory
    var available: [String: any Operator] = ["exec": ExecOperator(configuration: exec), "noop": NoopOperator()]
    for custom in customOperators { available[custom.name] = custom }
    var chosen: [String: any Operator] = [:]
    for name in configuration.operators {
      guard let op = available[name] else {
        throw ExecutorConfigurationError(
          field: "operators", problem: "names \"\(name)\", which is not an operator (known: \(available.keys.sorted().joined(separator: ", ")))")
      }
      chosen[name] = op
    }
    return chosen
  }

  // Callers in other modules (the `hourglass` command, the benchmark) would run this generic
  // body, and the state machine and timer queue under it, unspecialized: every call looking up
  // generic metadata at run time. A copy specialized for production's clock is compiled here
  // and chosen at run time instead.
  @_specialize(where C == ContinuousClock)
  public func run() async throws {
    guard !started.exchange(true, ordering: .relaxed) else {
      throw ExecutorConfigurationError(field: "-", problem: "the executor has already run once")
    }
    try configuration.validate()
    // `exec` runs in directories of this executor's own, which it holds for its life, and
    // where it first removes what an earlier executor of its id left when it died.
    var runDirectories: RunDirectoryRoot?
    if configuration.operators.contains("exec") && !customOperators.contains(where: { $0.name == "exec" }) {
      let root = try RunDirectoryRoot(temporaryDirectory: configuration.temporaryDirectory, executorID: configuration.executorID)
      if let reason = root.fallbackReason {
        logger.warning(
          "the usual root of this executor's run directories is not its own; using a new one",
          metadata: ["hourglass.reason": "\(reason)", "hourglass.directory": "\(root.path)"])
      }
      let swept = await root.sweepLeftovers()
      if swept > 0 {
        logger.info(
          "removed run directories an earlier executor left", metadata: ["hourglass.count": "\(swept)", "hourglass.directory": "\(root.path)"])
      }
      runDirectories = root
    }
    defer { withExtendedLifetime(runDirectories) {} }
    let operators = try resolveOperators(runDirectories: runDirectories?.path)
    var machine = ExecutorStateMachine<C.Instant>(
      settings: .init(
        executorID: configuration.executorID,
        slots: configuration.slots,
        operators: configuration.operators,
        version: configuration.version,
        heartbeatInterval: configuration.heartbeatInterval,
        leaseDurationFallback: configuration.leaseDurationFallback,
        backoff: configuration.reconnectBackoff,
        drainGrace: configuration.drainGrace,
        closeTimeout: configuration.closeTimeout,
        coordinators: transports.count,
        discovery: discovery != nil
      ))
    let shell = Shell(
      transports: transports, discovery: discovery, clock: clock, sink: sink, logger: logger, operators: operators, executorID: configuration.executorID,
      metrics: metrics, inboundLimits: (configuration.inboundMessagesPerStream, configuration.inboundBytesPerStream))
    let metrics = self.metrics
    metrics.slots.record(configuration.slots)
    metrics.running.record(0)
    metrics.connected.record(0)
    metrics.known.record(transports.count)
    metrics.eligible.record(1)
    logger.info(
      "executor starting",
      metadata: [
        "hourglass.executor_id": "\(configuration.executorID)", "hourglass.slots": "\(configuration.slots)",
        "hourglass.operators": "\(configuration.operators.joined(separator: ","))", "hourglass.coordinators": "\(transports.count)",
      ])

    let sink = self.sink
    var resentCounted = 0
    await withGracefulShutdownHandler {
      await withDiscardingTaskGroup { group in
        var done = shell.perform(machine.start(now: clock.now), group: &group)
        if !done {
          for await event in events {
            let now = clock.now
            let actions: [ExecutorStateMachine<C.Instant>.Action]
            switch event {
            case .inbound(let connection, let message, let ticket, let readAt):
              actions = machine.received(message, on: connection, now: readAt)
              ticket.handled()
              switch message.kind {
              case .registered?:
                metrics.connected.record(machine.connectedCount)
                metrics.known.record(machine.knownCount)
                if machine.takesBatches(on: connection) { shell.allowBatches(on: connection) }
              case .withdrawn(let withdrawn)?:
                metrics.creditsWithdrawn.increment(by: Int64(withdrawn.credits))
              case .heartbeatAck?:
                metrics.known.record(machine.knownCount)
                if let roundTrip = machine.lastRoundTrip(on: connection) { metrics.heartbeatRoundTrip.recordNanoseconds(roundTrip.wholeNanoseconds) }
                metrics.eligible.record(machine.eligibleEverywhere ? 1 : 0)
              default:
                break
              }
            case .connectionEnded(let connection, let error):
              actions = machine.connectionEnded(connection, error: error, now: now, random: Double.random(in: 0..<1))
              shell.streamEnded(connection)
              metrics.connected.record(machine.connectedCount)
              metrics.known.record(machine.knownCount)
              metrics.eligible.record(machine.eligibleEverywhere ? 1 : 0)
            case .timersDue(let sleeper):
              // Every timer due now, earliest first; timers they arm wait for the next wake.
              var fired: [ExecutorStateMachine<C.Instant>.Action] = []
              for timer in shell.takeDueTimers(sleeper: sleeper, now: now) { fired += machine.timerFired(timer, now: now) }
              actions = fired
            case .runFinished(let key, let outcome):
              shell.runEnded(key)
              metrics.runFinished(outcome.status)
              actions = machine.runFinished(key, outcome: outcome, now: now)
            case .shutdown:
              actions = machine.shutdown(now: now)
            }
            // Counted before the sends go out, so that a peer that sees a resent result sees
            // it counted too.
            if machine.resentResults > resentCounted {
              metrics.resultsResent.increment(by: Int64(machine.resentResults - resentCounted))
              resentCounted = machine.resentResults
            }
            done = shell.perform(actions, group: &group)
            metrics.running.record(machine.runs.count)
            if done { break }
          }
        }
        shell.tearDown(group: &group)
        group.cancelAll()
      }
    } onGracefulShutdown: {
      sink.yield(.shutdown)
    }
    logger.info("executor stopped", metadata: ["hourglass.executor_id": "\(configuration.executorID)"])
    try Task.checkCancellation()
  }
}

extension Executor {
  /// Creates an executor with one coordinator (or several behind one transport).
  public convenience init(
    configuration: ExecutorConfiguration, transport: any ClientTransport, clock: C, logger: Logger, operators: [any Operator] = [],
    metricsFactory: any MetricsFactory = MetricsSystem.factory
  ) {
    self.init(
      configuration: configuration, transports: [transport], clock: clock, logger: logger, operators: operators, metricsFactory: metricsFactory)
  }
}

extension Executor where C == ContinuousClock {
  /// Creates an executor that counts time on the continuous (monotonic) clock.
  public convenience init(
    configuration: ExecutorConfiguration, transport: any ClientTransport, logger: Logger, operators: [any Operator] = [],
    metricsFactory: any MetricsFactory = MetricsSystem.factory
  ) {
    self.init(
      configuration: configuration, transports: [transport], clock: ContinuousClock(), logger: logger, operators: operators,
      metricsFactory: metricsFactory)
  }

  /// Creates an executor with a stream to each of `transports` (one per coordinator) and, with
  /// `discovery`, to each coordinator the cluster announces, counting time on the continuous
  /// (monotonic) clock.
  public convenience init(
    configuration: ExecutorConfiguration, transports: [any ClientTransport], logger: Logger, operators: [any Operator] = [],
    metricsFactory: any MetricsFactory = MetricsSystem.factory, discovery: CoordinatorDiscovery? = nil
  ) {
    self.init(
      configuration: configuration, transports: transports, clock: ContinuousClock(), logger: logger, operators: operators,
      metricsFactory: metricsFactory, discovery: discovery)
  }
}

extension Executor {
  /// Carries out the state machine's actions. Owned by the event loop's task alone.
  final class Shell {
    /// How to reach each coordinator, by its number: those given at start, then those learnt
    /// from the cluster (made through `discovery`).
    private var transports: [Int: any ClientTransport]
    private let discovery: CoordinatorDiscovery?
    /// The numbers of the transports `discovery` made, which the shell releases.
    private var discovered: Set<Int> = []
    private let clock: C
    private let sink: AsyncStream<Event>.Continuation
    private let logger: Logger
    private let operators: [String: any Operator]
    private let executorID: String
    private let metrics: ExecutorMetrics

    /// Each open stream's outgoing queue and task, by connection number.
    private var streams: [UInt64: (queue: ExecutorOutbox, task: Task<Void, Never>)] = [:]
    /// Every armed timer; one task sleeps until the earliest.
    private var timers = TimerQueue<C.Instant>()
    private var sleeper: (id: UInt64, deadline: C.Instant, task: Task<Void, Never>)?
    private var nextSleeper: UInt64 = 0
    private var cancellations: [RunKey: RunCancellation] = [:]
    /// Runs leased ahead of their due time, each waiting for its `.start` timer.
    private var held: [RunKey: Hourglass_V1_LeaseGrant] = [:]
    /// Held runs whose `.start` timer fired, started at the end of the next `perform`.
    private var dueStarts: [RunKey] = []

    /// Per stream, the most messages (and bytes of them) read and not yet handled.
    private let inboundLimits: (messages: Int, bytes: Int)

    init(
      transports: [any ClientTransport], discovery: CoordinatorDiscovery?, clock: C, sink: AsyncStream<Event>.Continuation, logger: Logger,
      operators: [String: any Operator], executorID: String, metrics: ExecutorMetrics, inboundLimits: (messages: Int, bytes: Int)
    ) {
      self.inboundLimits = inboundLimits
      self.transports = Dictionary(uniqueKeysWithValues: transports.enumerated().map { ($0.offset, $0.element) })
      self.discovery = discovery
      self.clock = clock
      self.sink = sink
      self.logger = logger
      self.operators = operators
      self.executorID = executorID
      self.metrics = metrics
    }

    /// The state machine's timers due at `now`, disarmed, earliest first; called when sleeper
    /// `id` woke. The shell's own (`.start`: a held run is due) are kept for the end of the next
    /// ``perform(_:group:)``, after the actions of the machine's timers that fell due in the
    /// same wake: a run whose lease or timeout ran out meanwhile is stopped, never started.
    func takeDueTimers(sleeper id: UInt64, now: C.Instant) -> [ExecutorTimer] {
      if sleeper?.id == id { sleeper = nil }
      var due: [ExecutorTimer] = []
      while let timer = timers.popDue(now: now) {
        if case .start(let key) = timer {
          dueStarts.append(key)
        } else {
          due.append(timer)
        }
      }
      return due
    }

    /// The coordinator of stream `connection` takes result batches.
    func allowBatches(on connection: UInt64) {
      streams[connection]?.queue.allowBatches()
    }

    /// Stream `connection` has ended: forget it.
    func streamEnded(_ connection: UInt64) {
      streams[connection]?.queue.finish()
      streams[connection] = nil
    }

    func runEnded(_ key: RunKey) {
      cancellations[key] = nil
    }

    /// Performs `actions` in order; returns true once the executor should stop.
    func perform(_ actions: [ExecutorStateMachine<C.Instant>.Action], group: inout DiscardingTaskGroup) -> Bool {
      var finished = false
      for action in actions {
        switch action {
        case .connect(let connection, let coordinator):
          if let transport = transports[coordinator] {
            openStream(connection, to: transport)
          } else {
            // Its address could not be used (logged when announced): retried with backoff.
            sink.yield(.connectionEnded(connection, "no usable address for this coordinator"))
          }
        case .addCoordinator(let coordinator, let address):
          release(coordinator, group: &group)
          guard let discovery else { break }
          do {
            transports[coordinator] = try discovery.connect(address)
            discovered.insert(coordinator)
          } catch {
            logger.warning(
              "cannot connect to an announced coordinator",
              metadata: ["hourglass.executor_id": "\(executorID)", "hourglass.address": "\(address)", "hourglass.error": "\(error)"])
          }
        case .removeCoordinator(let coordinator):
          release(coordinator, group: &group)
        case .send(let message, let connection):
          if case .withdrawal? = message.kind { metrics.creditWithdrawals.increment() }
          streams[connection]?.queue.yield(message)
        case .sendHeartbeat(let connection, let sequence, let freeSlots, let running, let lastRoundTripMicros):
          let (seconds, nanos) = Date().protoParts
          streams[connection]?.queue.yield(
            .with {
              $0.heartbeat = .with {
                $0.sequence = sequence
                $0.executorTime.seconds = seconds
                $0.executorTime.nanos = nanos
                $0.freeSlots = freeSlots
                $0.running = running
                $0.lastRoundTripMicros = lastRoundTripMicros
              }
            })
        case .startRun(let key, let grant):
          startRun(key, grant, group: &group)
        case .stopRun(let key, let reason):
          if reason == .leaseExpired { metrics.selfFenced.increment() }
          stopRun(key, reason)
        case .schedule(let timer, let instant):
          schedule(timer, at: instant)
        case .cancelTimer(let timer):
          timers.cancel(timer)
        case .log(let level, let message, let run):
          var metadata: Logger.Metadata = ["hourglass.executor_id": "\(executorID)"]
          if let run {
            metadata["hourglass.run_id"] = "\(run.runID)"
            metadata["hourglass.fence"] = "\(run.fence)"
          }
          logger.log(level: level, "\(message)", metadata: metadata)
        case .closeStream(let connection):
          streams[connection]?.queue.finish()
        case .abandonStream(let connection):
          streams[connection]?.queue.finish()
          streams[connection]?.task.cancel()
        case .finish:
          finished = true
        }
      }
      if !dueStarts.isEmpty {
        let keys = dueStarts
        dueStarts = []
        if !finished {
          for key in keys { startHeld(key, group: &group) }
        }
      }
      armSleeper()
      return finished
    }

    /// Releases the transport of coordinator `coordinator` if discovery made it (in a task of
    /// the group: closing waits for the connection to end).
    private func release(_ coordinator: Int, group: inout DiscardingTaskGroup) {
      guard discovered.remove(coordinator) != nil, let transport = transports.removeValue(forKey: coordinator), let discovery else { return }
      group.addTask { await discovery.release(transport) }
    }

    func tearDown(group: inout DiscardingTaskGroup) {
      for coordinator in discovered { release(coordinator, group: &group) }
      timers.removeAll()
      held.removeAll()
      dueStarts.removeAll()
      sleeper?.task.cancel()
      sleeper = nil
      for stream in streams.values {
        stream.queue.finish()
        stream.task.cancel()
      }
      streams = [:]
    }

    private func schedule(_ timer: ExecutorTimer, at instant: C.Instant) {
      timers.schedule(timer, at: instant)
    }

    /// Makes sure one task sleeps until the earliest armed deadline (a sleeper that wakes
    /// earlier, for a timer since cancelled, finds nothing due and is replaced).
    private func armSleeper() {
      guard let deadline = timers.nextDeadline() else { return }
      if let sleeper, sleeper.deadline <= deadline { return }
      sleeper?.task.cancel()
      nextSleeper += 1
      let id = nextSleeper
      let clock = self.clock
      let sink = self.sink
      let task = Task {
        do {
          try await clock.sleep(until: deadline, tolerance: nil)
        } catch {
          return
        }
        sink.yield(.timersDue(id))
      }
      sleeper = (id, deadline, task)
    }

    private func openStream(_ connection: UInt64, to transport: any ClientTransport) {
      let queue = ExecutorOutbox()
      let client = RPCClient(transport: transport)
      let (sink, logger, inboundLimits, metrics, clock) = (self.sink, self.logger, self.inboundLimits, self.metrics, self.clock)
      // An unstructured task so that a stream can be abandoned on its own; it ends with the
      // call, and tearDown cancels it.
      let task = Task {
        do {
          try await client.bidirectional(
            Executor.connectMethod,
            requestType: Hourglass_V1_ExecutorMessage.self,
            responseType: Hourglass_V1_CoordinatorMessage.self,
            requests: { writer in
              // Whatever queued up while the previous messages were being written goes out
              // together (results and credits coalesced).
              while let messages = await queue.next() {
                for message in messages { try await writer.write(message) }
              }
            },
            responses: { responses in
              // The request side waits on the outbox: end it with the responses.
              defer { queue.finish() }
              // Messages read but not yet handled are bounded: past the budget this loop stops
              // reading, so the stream's flow control holds the coordinator back, rather than
              // the events queue growing without end.
              let budget = InFlightBudget(items: inboundLimits.messages, bytes: inboundLimits.bytes) { messages, bytes in
                metrics.inboundWaits.increment()
                logger.debug(
                  "paused reading a coordinator's stream: its messages read and not yet handled are at the bound",
                  metadata: ["hourglass.connection": "\(connection)", "hourglass.messages": "\(messages)", "hourglass.bytes": "\(bytes)"])
              }
              for try await message in responses {
                let readAt = clock.now
                let ticket = InboundTicket(budget: budget, bytes: Executor.inboundBytes(of: message))
                try await budget.take(items: 1, bytes: ticket.bytes)
                sink.yield(.inbound(connection, message, ticket, readAt: readAt))
              }
            }
          )
          sink.yield(.connectionEnded(connection, nil))
        } catch {
          queue.finish()
          sink.yield(.connectionEnded(connection, "\(error)"))
        }
      }
      streams[connection] = (queue, task)
    }

    /// Starts a granted run, or holds it until its due time when it was leased ahead
    /// (`LeaseGrant.start_after`): a timer of the shell's own, on the monotonic clock.
    private func startRun(_ key: RunKey, _ grant: Hourglass_V1_LeaseGrant, group: inout DiscardingTaskGroup) {
      let startAfter = grant.hasStartAfter ? Duration(grant.startAfter.seconds, grant.startAfter.nanos) : .zero
      guard startAfter > .zero else {
        launch(key, grant, group: &group)
        return
      }
      held[key] = grant
      schedule(.start(key), at: clock.now.advanced(by: startAfter))
    }

    /// The held run `key` is due: it starts now (unless it was stopped meanwhile).
    private func startHeld(_ key: RunKey, group: inout DiscardingTaskGroup) {
      guard let grant = held.removeValue(forKey: key) else { return }
      launch(key, grant, group: &group)
    }

    /// Stops a run: one that is running is told to stop; one held for its due time never starts
    /// and is reported stopped at once.
    private func stopRun(_ key: RunKey, _ reason: RunStopReason) {
      guard held.removeValue(forKey: key) != nil else {
        cancellations[key]?.cancel(reason)
        return
      }
      timers.cancel(.start(key))
      let now = Date()
      sink.yield(.runFinished(key, RunOutcome(status: reason.outcomeStatus, error: "stopped before it started: \(reason)", started: now, finished: now)))
    }

    private func launch(_ key: RunKey, _ grant: Hourglass_V1_LeaseGrant, group: inout DiscardingTaskGroup) {
      guard let op = operators[grant.operator] else { return }
      let cancellation = RunCancellation()
      cancellations[key] = cancellation
      let request = RunRequest(
        runID: grant.runID,
        taskID: grant.taskID,
        scheduledAt: Date(protoSeconds: grant.scheduledAt.seconds, nanos: grant.scheduledAt.nanos),
        attempt: grant.attempt,
        fence: grant.fence,
        blob: Array(grant.blob),
        blobSHA256: grant.blobSha256,
        arguments: grant.arguments,
        timeout: grant.hasTimeout ? Duration(grant.timeout.seconds, grant.timeout.nanos) : nil
      )
      let sink = self.sink
      logger.info(
        "run starting",
        metadata: [
          "hourglass.run_id": "\(key.runID)", "hourglass.task_id": "\(grant.taskID)", "hourglass.fence": "\(key.fence)",
          "hourglass.operator": "\(grant.operator)",
        ])
      metrics.runsStarted.increment()
      if let outcome = op.immediateOutcome(request) {
        // Done already (noop): no task for it; the loop takes the result next.
        sink.yield(.runFinished(key, outcome))
        return
      }
      group.addTask {
        let outcome = await op.run(request, cancellation: cancellation)
        sink.yield(.runFinished(key, outcome))
      }
    }
  }
}

extension Duration {
  /// Whole nanoseconds, saturating.
  var wholeNanoseconds: Int64 {
    let (seconds, attoseconds) = components
    let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
    return overflow ? .max : scaled &+ attoseconds / 1_000_000_000
  }
}

/// How an executor reaches the coordinators a cluster announces to it (`ClusterPeers`), beside
/// those it was given: `hourglass executor` dials them over mutual TLS with its own
/// certificate, tests through in-process transports.
public struct CoordinatorDiscovery: Sendable {
  /// Makes a transport to an announced "host:port"; throws for an address it cannot use (the
  /// executor logs it and does not connect there).
  public var connect: @Sendable (_ address: String) throws -> any ClientTransport
  /// Releases a transport `connect` made, once its coordinator is no longer announced or the
  /// executor stops (closes its connection).
  public var release: @Sendable (any ClientTransport) async -> Void

  /// Creates a discovery.
  public init(
    connect: @escaping @Sendable (_ address: String) throws -> any ClientTransport,
    release: @escaping @Sendable (any ClientTransport) async -> Void = { _ in }
  ) {
    self.connect = connect
    self.release = release
  }
}
