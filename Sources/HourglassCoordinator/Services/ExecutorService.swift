import Foundation
import HourglassCore
import HourglassProto
import HourglassRPC
import HourglassStore
import Logging
import Synchronization

/// The executors' long-lived stream: registration, credits, heartbeats with clock-skew
/// measurement, lease renewals and results (recorded only with the current fence).
struct ExecutorService: Sendable {
  static let connect = MethodDescriptor(service: "hourglass.v1.ExecutorService", method: "Connect")
  /// The longest heartbeat round trip taken into the clock-offset estimate (one hour).
  static let longestRoundTripMicros: UInt64 = 3_600_000_000

  let store: any TaskStore
  let dispatcher: Dispatcher
  /// Results of every stream, gathered into shared transactions.
  let results: StoreBatcher<ResultRecord, RecordOutcome>
  /// Lease renewals of every stream, gathered into shared transactions.
  let renewals: StoreBatcher<LeaseRenewalRequest, Bool>
  let clock: any CoordinatorClock
  let configuration: CoordinatorConfiguration
  let logger: Logger
  let metrics: CoordinatorMetrics

  func register(into router: inout RPCRouter) {
    router.registerBidirectional(Self.connect) {
      (requests: RPCMessages<Hourglass_V1_ExecutorMessage>, writer: RPCWriter<Hourglass_V1_CoordinatorMessage>, context) in
      try await serve(requests, writer, context)
    }
  }

  private func serve(
    _ requests: RPCMessages<Hourglass_V1_ExecutorMessage>, _ writer: RPCWriter<Hourglass_V1_CoordinatorMessage>, _ context: ServerContext
  ) async throws {
    guard let peer = context.peer else {
      throw RPCError(code: .unauthenticated, message: "an executor certificate is required")
    }
    context.annotations["hourglass.executor"] = "\(peer.name)"
    guard peer.role == "executor" else {
      throw RPCError(code: .permissionDenied, message: "role \(peer.role) may not connect as an executor")
    }
    var iterator = requests.makeAsyncIterator()
    guard let first = try await iterator.next(), case .register(let registration)? = first.kind else {
      throw RPCError(code: .invalidArgument, message: "the first message must be Register")
    }
    guard registration.executorID == peer.name else {
      throw RPCError(code: .permissionDenied, message: "executor_id \(registration.executorID) is not the certificate's name \(peer.name)")
    }
    guard registration.slots > 0, !registration.operators.isEmpty else {
      throw RPCError(code: .invalidArgument, message: "register: slots and operators are required")
    }
    var registered = Hourglass_V1_Registered()
    registered.coordinatorID = configuration.coordinatorID
    registered.heartbeatInterval = ProtoTime.duration(configuration.heartbeatIntervalMicros)
    registered.leaseDuration = ProtoTime.duration(configuration.leaseDurationMicros)
    registered.batches = true
    registered.withdrawals = true
    var hello = Hourglass_V1_CoordinatorMessage()

    // Added to the pool before Registered is sent: an executor that has read Registered is one
    // the dispatcher counts (a cluster coordinator joins only with executors connected). It is
    // sent no lease before Registered, since it has granted no credit yet.
    let session = await dispatcher.addExecutor(
      executorID: registration.executorID,
      operators: Set(registration.operators),
      slots: Int(registration.slots),
      batches: registration.batches,
      send: { try await writer.write($0) }
    )
    // Read after joining the pool: the membership pass a first executor triggers may already
    // have announced this coordinator to the others.
    if let peers = await dispatcher.clusterPeers { registered.cluster = Self.announcement(peers) }
    hello.registered = registered
    let executor = ConnectedExecutor(id: registration.executorID)
    do {
      try await writer.write(hello)
      // Results are recorded concurrently (a child task per result message), so that
      // results from every stream share group-committed transactions; the other messages are
      // handled in order. A malformed run id ends the stream at once (INVALID_ARGUMENT). A
      // result that could not be recorded (the store failed) ends it at the next message, a
      // heartbeat at the latest: this loop is waiting for one when a child fails, and a failed
      // child cannot interrupt that wait. The executor then reconnects and sends its
      // unacknowledged results again.
      let failure = Mutex<(any Error)?>(nil)
      let answering: @Sendable (() async throws -> Void) async -> Void = { answer in
        do { try await answer() } catch { failure.withLock { $0 = $0 ?? error } }
      }
      // Results in flight on this stream are bounded: past the budget, the loop stops reading
      // until earlier results are answered (a slow store slows its executors, rather than
      // filling this coordinator's memory with their results).
      let budget = InFlightBudget(items: configuration.resultsInFlightPerExecutor, bytes: configuration.resultBytesInFlightPerExecutor) {
        [logger, metrics] items, bytes in
        metrics.executorResultWaits.increment()
        logger.debug(
          "executor stream paused: its results in flight are at the bound",
          metadata: ["hourglass.executor": "\(executor.id)", "hourglass.results_in_flight": "\(items)", "hourglass.result_bytes_in_flight": "\(bytes)"])
      }
      try await withThrowingDiscardingTaskGroup { group in
        while let message = try await iterator.next() {
          if let error = failure.withLock({ $0 }) { throw error }
          switch message.kind {
          case .result(let result):
            let runIDs = try Self.runIDs(of: [result])
            let bytes = Self.inFlightBytes(of: [result])
            try await budget.take(items: 1, bytes: bytes)
            group.addTask {
              defer { budget.give(items: 1, bytes: bytes) }
              await answering { try await answer(result, runID: runIDs[0], executor: executor, writer: writer) }
            }
          case .results(let batch):
            let runIDs = try Self.runIDs(of: batch.results)
            let bytes = Self.inFlightBytes(of: batch.results)
            try await budget.take(items: batch.results.count, bytes: bytes)
            group.addTask {
              defer { budget.give(items: batch.results.count, bytes: bytes) }
              await answering { try await answer(batch, runIDs: runIDs, executor: executor, writer: writer) }
            }
          default:
            try await handle(message, session: session, executor: executor, writer: writer)
          }
        }
      }
      await dispatcher.removeExecutor(session: session)
    } catch {
      await dispatcher.removeExecutor(session: session)
      throw error
    }
  }

  /// The most of a run's error text that is stored (it is read back with every page of the
  /// task's run history; the output tail has its own 64 KiB).
  static let storedErrorBytes = 4_096

  /// `error` cut to ``storedErrorBytes`` (at a character boundary, marked with "…"), its NUL
  /// characters replaced (PostgreSQL's `text` refuses them, failing the whole batch of results).
  static func storedError(_ reported: String) -> String {
    let error = reported.utf8.contains(0) ? reported.replacingOccurrences(of: "\u{0}", with: "\u{FFFD}") : reported
    return TextCut.cut(error, toUTF8Bytes: storedErrorBytes)
  }

  /// The run ids of `results`, parsed; refuses (INVALID_ARGUMENT) any that is not a run id (a
  /// time no run can have included).
  static func runIDs(of results: [Hourglass_V1_RunResult]) throws -> [RunID] {
    try results.map { result in
      guard let runID = RunID(result.runID) else {
        throw RPCError(code: .invalidArgument, message: "run_id: \"\(result.runID)\" is not a run id")
      }
      return runID
    }
  }

  /// What results weigh against a stream's byte budget: their output tails and errors, plus a
  /// little for the rest of each.
  static func inFlightBytes(of results: [Hourglass_V1_RunResult]) -> Int {
    results.reduce(0) { $0 + 128 + $1.runID.utf8.count + $1.outputTail.count + $1.error.utf8.count }
  }

  /// The coordinators an executor can connect to, as `Registered` and `HeartbeatAck` carry them.
  static func announcement(_ peers: [CoordinatorMember]) -> Hourglass_V1_ClusterPeers {
    .with {
      $0.coordinators = peers.compactMap { member in
        guard let address = member.address else { return nil }
        return .with {
          $0.coordinatorID = member.id
          $0.address = address
        }
      }
    }
  }

  private func handle(
    _ message: Hourglass_V1_ExecutorMessage, session: UInt64, executor: ConnectedExecutor, writer: RPCWriter<Hourglass_V1_CoordinatorMessage>
  ) async throws {
    switch message.kind {
    case .credit(let grant):
      await dispatcher.grant(session: session, credits: Int(grant.credits))
    case .withdrawal(let withdrawal):
      var reply = Hourglass_V1_CoordinatorMessage()
      reply.withdrawn.credits = UInt32(await dispatcher.withdraw(session: session, credits: Int(withdrawal.credits)))
      try await writer.write(reply)
    case .heartbeat(let heartbeat):
      let now = clock.nowMicros()
      // offset = executor clock − coordinator clock at the moment the executor sent it.
      // A round trip is at most a heartbeat's timeout in practice; bounding it keeps a nonsense
      // value (up to 2^64 µs) from overflowing the arithmetic below.
      let sentAt = now - Int64(min(heartbeat.lastRoundTripMicros, Self.longestRoundTripMicros) / 2)
      let skew = ProtoTime.micros(heartbeat.executorTime) - sentAt
      executor.clockOffset.measured(skew)
      // One hop to the dispatcher for both: an acknowledgement waits for it.
      let (eligible, peers) = await dispatcher.heartbeat(session: session, skewMicros: skew)
      var ack = Hourglass_V1_HeartbeatAck()
      ack.sequence = heartbeat.sequence
      ack.coordinatorTime = ProtoTime.timestamp(now)
      ack.measuredSkewMicros = skew
      ack.eligible = eligible
      if let peers { ack.cluster = Self.announcement(peers) }
      var reply = Hourglass_V1_CoordinatorMessage()
      reply.heartbeatAck = ack
      try await writer.write(reply)
    case .renewal(let renewal):
      var ack = Hourglass_V1_RenewalAck()
      ack.runID = renewal.runID
      ack.fence = renewal.fence
      if let runID = RunID(renewal.runID) {
        // A coordinator whose clock is off the database's beyond the bound (in a cluster) writes
        // the expiry by the database's time: another coordinator recovers the lease by its own.
        let now = clock.nowMicros() - dispatcher.clockCorrectionMicros.load(ordering: .relaxed)
        let request = LeaseRenewalRequest(
          runID: runID, fence: Fence(rawValue: renewal.fence), expiresAt: now + configuration.leaseDurationMicros)
        if try await renewals.submit(request) {
          ack.renewed = true
          ack.leaseDuration = ProtoTime.duration(configuration.leaseDurationMicros)
        } else {
          ack.renewed = false
          await dispatcher.leaseEnded(runID, fence: request.fence)
        }
      }
      var reply = Hourglass_V1_CoordinatorMessage()
      reply.renewalAck = ack
      try await writer.write(reply)
    case .result, .results:
      assertionFailure("results are answered by the reading loop")
    case .draining:
      await dispatcher.drain(session: session)
      logger.info("executor draining", metadata: ["hourglass.executor": "\(executor.id)"])
    case .register:
      throw RPCError(code: .invalidArgument, message: "Register may be sent only once")
    case nil:
      break  // A message kind from a newer executor: ignored.
    }
  }

  /// Records a result and acknowledges it.
  private func answer(
    _ result: Hourglass_V1_RunResult, runID: RunID, executor: ConnectedExecutor, writer: RPCWriter<Hourglass_V1_CoordinatorMessage>
  ) async throws {
    let recorded = try await record(result, runID: runID, executor: executor)
    var ack = Hourglass_V1_ResultAck()
    ack.runID = result.runID
    ack.fence = result.fence
    ack.recorded = recorded
    var reply = Hourglass_V1_CoordinatorMessage()
    reply.resultAck = ack
    try await writer.write(reply)
  }

  /// Records a batch of results and acknowledges them in one `ResultAckBatch`.
  private func answer(
    _ batch: Hourglass_V1_RunResultBatch, runIDs: [RunID], executor: ConnectedExecutor, writer: RPCWriter<Hourglass_V1_CoordinatorMessage>
  ) async throws {
    let recorded = try await record(batch.results, runIDs: runIDs, executor: executor)
    var acks = Hourglass_V1_ResultAckBatch()
    acks.acks.reserveCapacity(recorded.count)
    for (result, recorded) in zip(batch.results, recorded) {
      var ack = Hourglass_V1_ResultAck()
      ack.runID = result.runID
      ack.fence = result.fence
      ack.recorded = recorded
      acks.acks.append(ack)
    }
    var reply = Hourglass_V1_CoordinatorMessage()
    reply.resultAcks = acks
    try await writer.write(reply)
  }

  /// Records several results of one stream together: one look-up of their leases in the
  /// dispatcher, one request to the group committer, one update of the dispatcher afterwards.
  /// Each result is still its own compare-and-set on its fence, with the same outcome as
  /// through ``record(_:runID:executor:)``; a result whose lease the dispatcher does not know goes
  /// that way (it reads the store). `runIDs` are the results' run ids, parsed.
  func record(_ results: [Hourglass_V1_RunResult], runIDs: [RunID], executor: ConnectedExecutor) async throws -> [Bool] {
    let keys = zip(runIDs, results).map { ($0, Fence(rawValue: $1.fence)) }
    let active = await dispatcher.activeLeases(keys)
    var recorded = Array(repeating: false, count: results.count)
    var pending: [(index: Int, prepared: Prepared)] = []
    var ended: [(RunID, Fence, Bool)] = []
    let clockOffset = executor.clockOffset.currentMicros
    let now = clock.nowMicros()
    do {
      for index in results.indices {
        guard let lease = active[index] else {
          recorded[index] = try await record(results[index], runID: keys[index].0, executor: executor)
          continue
        }
        let prepared = try prepare(
          results[index], runID: keys[index].0, fence: keys[index].1, task: lease.task, attempt: lease.attempt, detached: lease.detached,
          clockOffset: clockOffset, now: now)
        pending.append((index, prepared))
      }
      let outcomes = try await self.results.submit(pending.map(\.prepared.record))
      var follow: [DueQueue.Entry] = []
      for ((index, prepared), outcome) in zip(pending, outcomes) {
        let ok = outcome == .recorded
        recorded[index] = ok
        ended.append((prepared.record.runID, prepared.record.fence, ok))
        if ok {
          if let next = finished(prepared, result: results[index]) { follow.append(next) }
        } else {
          logger.info(
            "result with a stale fence refused",
            metadata: ["hourglass.run_id": "\(prepared.record.runID)", "hourglass.fence": "\(prepared.record.fence.rawValue)"])
        }
      }
      await dispatcher.resultsHandled(ended, enqueue: follow)
    } catch {
      // Whatever happened to them, these leases are over.
      await dispatcher.resultsHandled(pending.map { ($0.prepared.record.runID, $0.prepared.record.fence, false) }, enqueue: [])
      throw error
    }
    return recorded
  }

  /// Records a run's result (its run id `runID`, parsed) if its fence is still current, and
  /// moves the task on: the next run of a recurring task, a retry with backoff, or its end.
  func record(_ result: Hourglass_V1_RunResult, runID: RunID, executor: ConnectedExecutor) async throws -> Bool {
    // Whatever happens to the result, the lease it names is over (a stale fence's is long
    // over: the current lease is left alone).
    let fence = Fence(rawValue: result.fence)
    do {
      let recorded = try await storeResult(result, runID: runID, executor: executor)
      await dispatcher.leaseEnded(runID, fence: fence, recorded: recorded)
      return recorded
    } catch {
      await dispatcher.leaseEnded(runID, fence: fence)
      throw error
    }
  }

  private func storeResult(_ result: Hourglass_V1_RunResult, runID: RunID, executor: ConnectedExecutor) async throws -> Bool {
    let fence = Fence(rawValue: result.fence)
    // The lease this coordinator granted carries the task and the attempt: no store read. A
    // lease it does not know (granted before a restart) is read from the store.
    let task: TaskRecord
    let attempt: Int32
    let detached: Bool
    if let active = await dispatcher.activeLease(runID, fence: fence) {
      task = active.task
      attempt = active.attempt
      detached = active.detached
    } else {
      guard let stored = try await store.dispatchRecord(taskID: runID.taskID) else { return false }
      guard
        let current = try await store.runs(taskID: runID.taskID, owner: stored.owner, before: runID.scheduledMicros + 1, limit: 1).first,
        current.id == runID, current.fence == fence, current.state == .leased
      else {
        logger.info(
          "result with a stale fence refused",
          metadata: ["hourglass.run_id": "\(runID)", "hourglass.executor": "\(executor.id)", "hourglass.fence": "\(fence.rawValue)"])
        return false
      }
      task = stored
      attempt = current.attempt
      // The task moved on while this run was leased: it was detached (overlap allowed).
      detached = stored.state != .running || stored.nextRunMicros != runID.scheduledMicros
    }
    let prepared = try prepare(
      result, runID: runID, fence: fence, task: task, attempt: attempt, detached: detached, clockOffset: executor.clockOffset.currentMicros,
      now: clock.nowMicros())
    // The store's compare-and-set on the fence decides; results from all streams share
    // transactions.
    let outcome = try await results.submit(prepared.record)
    guard outcome == .recorded else {
      logger.info("result with a stale fence refused", metadata: ["hourglass.run_id": "\(runID)", "hourglass.fence": "\(fence.rawValue)"])
      return false
    }
    if let next = finished(prepared, result: result) {
      await dispatcher.enqueue(taskID: next.taskID, scheduledMicros: next.scheduledMicros, dueMicros: next.dueMicros, priority: next.priority)
    }
    return true
  }

  /// A result, planned: what the store is to record, and what it means for the task.
  struct Prepared {
    var record: ResultRecord
    var plan: ResultPlanner.Plan
    var task: TaskRecord
    var attempt: Int32
  }

  /// `clockOffset` is the executor's clock minus this coordinator's: the result's times are
  /// moved onto this coordinator's clock (``ReportedRunTimes``).
  private func prepare(
    _ result: Hourglass_V1_RunResult, runID: RunID, fence: Fence, task: TaskRecord, attempt: Int32, detached: Bool, clockOffset: Int64,
    now: Int64
  ) throws -> Prepared {
    let plan = try ResultPlanner(configuration: configuration).plan(
      task: task, runID: runID, attempt: attempt, outcome: result.outcome, now: now, detached: detached)
    let times = ReportedRunTimes(
      reportedStarted: result.hasStarted ? ProtoTime.micros(result.started) : nil,
      reportedFinished: result.hasFinished ? ProtoTime.micros(result.finished) : nil,
      clockOffsetMicros: clockOffset, scheduledMicros: runID.scheduledMicros, now: now)
    let record = ResultRecord(
      runID: runID,
      fence: fence,
      result: RunResult(
        state: plan.state,
        finishedMicros: times.finishedMicros,
        startedMicros: times.startedMicros,
        exitStatus: result.exitCode,
        outputTail: Array(result.outputTail.suffix(65_536)),
        error: result.error.isEmpty ? nil : Self.storedError(result.error),
        next: plan.next,
        forgetRunsBeforeMicros: forgetRunsBefore(task: task, runID: runID, next: plan.next)
      ))
    return Prepared(record: record, plan: plan, task: task, attempt: attempt)
  }

  /// A recurring task's run-history retention: with each finished run, the runs scheduled more
  /// than the retention before it go. Not for a retry (the run goes on) nor a one-shot task
  /// (it has one run, and goes whole when its own retention passes).
  private func forgetRunsBefore(task: TaskRecord, runID: RunID, next: RunResult.Next) -> Int64? {
    guard task.recurring, let retention = configuration.runHistoryRetentionMicros else { return nil }
    if case .retry = next { return nil }
    return runID.scheduledMicros - retention
  }

  /// After a result was recorded: metrics, logs, and the run the task goes on with, if any (to
  /// be queued in the dispatcher).
  private func finished(_ prepared: Prepared, result: Hourglass_V1_RunResult) -> DueQueue.Entry? {
    let plan = prepared.plan
    let task = prepared.task
    let attempt = prepared.attempt
    let runID = prepared.record.runID
    switch plan.state {
    case .succeeded: metrics.runsSucceeded.increment()
    case .cancelled: metrics.runsCancelled.increment()
    default: metrics.runsFailed.increment()
    }
    if plan.state == .dead {
      metrics.taskFailed(operatorName: task.operatorName)
      var metadata: Logger.Metadata = [
        "hourglass.task_id": "\(runID.taskID)", "hourglass.run_id": "\(runID)", "hourglass.owner": "\(task.owner)",
        "hourglass.operator": "\(task.operatorName)", "hourglass.attempt": "\(attempt)", "hourglass.exit_code": "\(result.exitCode)",
      ]
      if !result.error.isEmpty { metadata["hourglass.error"] = "\(result.error)" }
      logger.warning("run failed after its last attempt", metadata: metadata)
    }
    if plan.skipped > 0 { metrics.runsSkipped.increment(by: Int64(plan.skipped)) }
    switch plan.next {
    case .retry(let at):
      metrics.runsRetried.increment()
      logger.info("run failed; retrying", metadata: ["hourglass.run_id": "\(runID)", "hourglass.attempt": "\(attempt)", "hourglass.retry_at": "\(at)"])
      return DueQueue.Entry(taskID: runID.taskID, scheduledMicros: runID.scheduledMicros, dueMicros: at, priority: task.priority)
    case .reschedule(let next):
      return DueQueue.Entry(taskID: runID.taskID, scheduledMicros: next, dueMicros: next, priority: task.priority)
    case .runOnly, .finish:
      return nil
    }
  }
}

/// One executor's stream as the result path sees it: its name, and its clock's offset from
/// this coordinator's as the heartbeats measure it.
struct ConnectedExecutor: Sendable {
  /// The executor's id (its certificate's name).
  let id: String
  /// Updated at each heartbeat.
  let clockOffset = ExecutorClockOffset()
}

/// Decides what a run's outcome means for its task: a pure function of the task, the run, the
/// outcome and the time, tested without a store.
struct ResultPlanner {
  let configuration: CoordinatorConfiguration

  struct Plan: Equatable {
    var state: RunState
    var next: RunResult.Next
    /// Runs skipped by the misfire policy on the way to the next one.
    var skipped: Int
  }

  func plan(task: TaskRecord, run: RunRecord, outcome: Hourglass_V1_RunOutcome, now: Int64) throws -> Plan {
    try plan(task: task, runID: run.id, attempt: run.attempt, outcome: outcome, now: now)
  }

  func plan(
    task: TaskRecord, runID: RunID, attempt runAttempt: Int32, outcome: Hourglass_V1_RunOutcome, now: Int64, detached: Bool = false
  ) throws -> Plan {
    if detached {
      // Overlap allowed: the task moved on when this run was leased; record the run only. Such
      // a run gets one attempt (a retry would need a second due time for one task).
      switch outcome {
      case .succeeded: return Plan(state: .succeeded, next: .runOnly, skipped: 0)
      case .cancelled: return Plan(state: .cancelled, next: .runOnly, skipped: 0)
      case .failed, .timedOut, .unspecified, .UNRECOGNIZED: return Plan(state: .dead, next: .runOnly, skipped: 0)
      }
    }
    switch outcome {
    case .succeeded where !task.recurring:
      // A one-shot task that succeeded ends: its spec need not be read.
      return Plan(state: .succeeded, next: .finish(.completed), skipped: 0)
    case .cancelled:
      return Plan(state: .cancelled, next: .finish(.completed), skipped: 0)
    default:
      break
    }
    let stored = try StoredTaskSpec.decode(task.scheduleSpec)
    switch outcome {
    case .succeeded:
      return nextRun(task: task, stored: stored, after: runID.scheduledMicros, now: now, state: .succeeded)
    case .cancelled:
      return Plan(state: .cancelled, next: .finish(.completed), skipped: 0)
    case .failed, .timedOut, .unspecified, .UNRECOGNIZED:
      let attempt = Int(runAttempt)
      if attempt < stored.retry.maxAttempts,
        let delay = stored.retry.backoff(afterAttempt: attempt, seed: StableHash.hash(runID.description))
      {
        return Plan(state: .failed, next: .retry(atMicros: now + delay), skipped: 0)
      }
      var plan = nextRun(task: task, stored: stored, after: runID.scheduledMicros, now: now, state: .dead)
      if case .finish = plan.next { plan.next = .finish(.dead) }
      return plan
    }
  }

  /// The next run of a recurring task, applying the misfire policy when runs were missed, and
  /// its `maxRuns`: the run at `scheduled` counts as started, with the task's runs before it
  /// (`runsCompleted`, read when it was leased).
  func nextRun(task: TaskRecord, stored: StoredTaskSpec, after scheduled: Int64, now: Int64, state: RunState) -> Plan {
    guard task.recurring, let schedule = try? Schedule(stored.schedule, taskID: task.id.description) else {
      return Plan(state: state, next: .finish(state == .dead ? .dead : .completed), skipped: 0)
    }
    let runsSoFar = Int(clamping: task.runsCompleted) + 1
    guard let next = schedule.nextFireTime(after: scheduled, runsSoFar: runsSoFar) else {
      return Plan(state: state, next: .finish(.completed), skipped: 0)
    }
    if next >= now - stored.schedule.misfire.grace {
      return Plan(state: state, next: .reschedule(nextRunMicros: next), skipped: 0)
    }
    let decision = schedule.misfire(after: scheduled, now: now, runsSoFar: runsSoFar)
    if let catchUp = decision.runsToStart.first {
      return Plan(state: state, next: .reschedule(nextRunMicros: catchUp), skipped: decision.skipped)
    }
    if let future = decision.nextFireTime {
      return Plan(state: state, next: .reschedule(nextRunMicros: future), skipped: decision.skipped)
    }
    return Plan(state: state, next: .finish(.completed), skipped: decision.skipped)
  }
}
