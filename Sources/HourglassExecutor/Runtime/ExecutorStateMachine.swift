import Foundation
import HourglassProto
import Logging

/// One lease of one run: the run id and the fence the coordinator granted it under.
public struct RunKey: Hashable, Sendable, CustomStringConvertible {
  /// The run.
  public var runID: String
  /// The lease's fence.
  public var fence: UInt64

  /// Creates a key.
  public init(runID: String, fence: UInt64) {
    self.runID = runID
    self.fence = fence
  }

  public var description: String { "\(runID)@\(fence)" }
}

/// The executor's timers, each armed at most once at a time.
enum ExecutorTimer: Hashable, Sendable {
  case heartbeat
  case reconnect
  case drainDeadline
  case closeDeadline
  case renewal(RunKey)
  case leaseExpiry(RunKey)
  case timeout(RunKey)
}

/// The executor's bookkeeping, without I/O: the connection, the slots and credits, every
/// lease and its expiry by the monotonic clock, drain. Each event returns the actions the
/// async shell carries out (send, start or stop a run, arm a timer, log).
///
/// Self-fencing lives here: a lease's expiry is counted from the grant's receipt, then from
/// the sending of each renewal the coordinator acknowledged, plus the lease duration; when its
/// timer fires without a later acknowledged renewal the run is stopped and its result dropped.
struct ExecutorStateMachine<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
  enum Action: Sendable {
    /// Open stream number `connection` (its first message, `Register`, follows as `.send`).
    case connect(connection: UInt64)
    case send(Hourglass_V1_ExecutorMessage)
    /// Send a heartbeat stamped with the wall clock.
    case sendHeartbeat(sequence: UInt64, freeSlots: UInt32, running: UInt32, lastRoundTripMicros: UInt64)
    case startRun(RunKey, Hourglass_V1_LeaseGrant)
    case stopRun(RunKey, RunStopReason)
    case schedule(ExecutorTimer, at: Instant)
    case cancelTimer(ExecutorTimer)
    case log(Logger.Level, String, run: RunKey?)
    /// Half-close the stream: nothing more to send.
    case closeStream
    /// Cancel the stream outright.
    case abandonStream
    /// Stop: the executor's work is over.
    case finish
  }

  struct Settings: Sendable {
    var executorID: String
    var slots: Int
    var operators: [String]
    var version: String
    var heartbeatInterval: Duration
    var leaseDurationFallback: Duration
    var backoff: ExecutorConfiguration.Backoff
    var drainGrace: Duration
    var closeTimeout: Duration
  }

  struct Session: Sendable {
    var connection: UInt64
    var coordinatorID: String
    var heartbeatInterval: Duration
    var leaseDuration: Duration?
    /// The coordinator takes `RunResultBatch`.
    var batches: Bool = false
  }

  enum Link: Sendable {
    case idle
    case registering(connection: UInt64)
    case connected(Session)
    case backingOff
  }

  enum Lifecycle: Sendable, Equatable {
    case running
    case draining(deadline: Instant, expired: Bool)
    case closing
    case finished
  }

  struct Run: Sendable {
    enum Phase: Sendable {
      case running
      case stopping(RunStopReason)
      /// Finished while disconnected: the result waits for a connection while the lease lasts.
      case awaitingDelivery(Hourglass_V1_RunResult)
    }

    var grant: Hourglass_V1_LeaseGrant
    var leaseDuration: Duration
    var leaseExpiry: Instant
    /// When the oldest renewal not yet acknowledged was sent.
    var renewalSentAt: Instant?
    var phase: Phase
  }

  /// Heartbeat intervals without an acknowledgement after which the stream is given up.
  static var missedHeartbeatLimit: Int { 3 }

  let settings: Settings
  private(set) var link: Link = .idle
  private(set) var lifecycle: Lifecycle = .running
  private(set) var runs: [RunKey: Run] = [:]
  /// Leases the coordinator may still push on this connection.
  private(set) var outstandingCredits = 0
  private(set) var eligible = true
  private var nextConnection: UInt64 = 0
  private var failedAttempts = 0
  private var heartbeatSequence: UInt64 = 0
  /// Heartbeats awaiting their acknowledgement, by sequence, with when they were sent
  /// (monotonic clock).
  private var heartbeatsInFlight: [UInt64: Instant] = [:]
  /// The last heartbeat's round trip, sent with the next one for skew correction.
  private(set) var lastRoundTrip: Duration?

  init(settings: Settings) {
    self.settings = settings
  }

  var freeSlots: Int { max(0, settings.slots - runs.count) }

  var currentConnection: UInt64? {
    switch link {
    case .registering(let connection): connection
    case .connected(let session): session.connection
    case .idle, .backingOff: nil
    }
  }

  private var isConnected: Bool {
    if case .connected = link { return true }
    return false
  }

  // MARK: Events

  /// The executor starts.
  mutating func start(now: Instant) -> [Action] {
    guard case .idle = link, lifecycle == .running else { return [] }
    return connect()
  }

  /// A stream ended (or never opened).
  mutating func connectionEnded(_ connection: UInt64, error: String?, now: Instant, random: Double) -> [Action] {
    guard currentConnection == connection else { return [] }
    outstandingCredits = 0
    var actions: [Action] = [.cancelTimer(.heartbeat)]
    if lifecycle == .closing {
      lifecycle = .finished
      link = .idle
      return actions + [.cancelTimer(.closeDeadline), .finish]
    }
    let delay = settings.backoff.delay(attempt: failedAttempts, random: random)
    failedAttempts += 1
    link = .backingOff
    actions.append(.log(.warning, "the coordinator stream ended (\(error ?? "closed by the coordinator")); reconnecting in \(delay)", run: nil))
    actions.append(.schedule(.reconnect, at: now.advanced(by: delay)))
    return actions
  }

  /// A message from the coordinator on stream `connection`.
  mutating func received(_ message: Hourglass_V1_CoordinatorMessage, on connection: UInt64, now: Instant) -> [Action] {
    guard currentConnection == connection else { return [] }
    switch message.kind {
    case .registered(let registered): return handleRegistered(registered, connection: connection, now: now)
    case .lease(let grant): return handleLease(grant, now: now)
    case .leases(let batch):
      var actions: [Action] = []
      actions.reserveCapacity(batch.grants.count * 3)
      for grant in batch.grants { actions += handleLease(grant, now: now) }
      return actions
    case .heartbeatAck(let ack): return handleHeartbeatAck(ack, now: now)
    case .renewalAck(let ack): return handleRenewalAck(ack, now: now)
    case .cancel(let cancel): return handleCancel(cancel)
    case .resultAck(let ack):
      return Self.handleResultAck(ack)
    case .resultAcks(let batch):
      return batch.acks.flatMap(Self.handleResultAck)
    case nil:
      return [.log(.warning, "ignored a coordinator message of an unknown kind", run: nil)]
    }
  }

  /// An operator returned.
  mutating func runFinished(_ key: RunKey, outcome: RunOutcome, now: Instant) -> [Action] {
    guard var run = runs[key] else {
      return [.log(.error, "a run finished that the executor does not know (a bug)", run: key)]
    }
    var actions: [Action] = [.cancelTimer(.renewal(key)), .cancelTimer(.timeout(key))]
    var outcome = outcome
    switch run.phase {
    case .stopping(let reason) where Self.dropsResult(reason):
      runs[key] = nil
      actions.append(.cancelTimer(.leaseExpiry(key)))
      actions.append(.log(.warning, "the run was stopped and its result dropped: \(reason)", run: key))
      actions += slotFreed()
      return actions + checkDrained(now: now)
    case .stopping(.drainGraceExpired):
      outcome.status = .failed
      outcome.error = RunStopReason.drainGraceExpired.description
    case .running, .stopping, .awaitingDelivery:
      break
    }
    let result = Self.result(for: run.grant, outcome)
    if isConnected {
      runs[key] = nil
      actions.append(.cancelTimer(.leaseExpiry(key)))
      actions.append(.send(.with { $0.result = result }))
      actions += slotFreed()
    } else {
      // Keep the slot and the lease timer: delivered on reconnection, dropped at expiry.
      run.phase = .awaitingDelivery(result)
      runs[key] = run
      actions.append(.log(.info, "the run finished while disconnected; its result waits for a connection while the lease lasts", run: key))
    }
    return actions + checkDrained(now: now)
  }

  /// A timer went off.
  mutating func timerFired(_ timer: ExecutorTimer, now: Instant) -> [Action] {
    switch timer {
    case .reconnect:
      guard case .backingOff = link else { return [] }
      return connect()

    case .heartbeat:
      guard case .connected(let session) = link else { return [] }
      if let oldest = heartbeatsInFlight.values.min(), oldest.duration(to: now) >= session.heartbeatInterval * Self.missedHeartbeatLimit {
        // The coordinator has stopped answering while the stream looks open (a wedged peer or
        // a half-dead connection): give the stream up and reconnect.
        heartbeatsInFlight = [:]
        return [
          .log(.warning, "no HeartbeatAck for \(Self.missedHeartbeatLimit) heartbeat intervals; abandoning the stream", run: nil),
          .abandonStream,
        ]
      }
      heartbeatSequence += 1
      heartbeatsInFlight[heartbeatSequence] = now
      let roundTrip = lastRoundTrip.map { UInt64(max(0, $0.microseconds)) } ?? 0
      return [
        .sendHeartbeat(sequence: heartbeatSequence, freeSlots: UInt32(freeSlots), running: UInt32(runs.count), lastRoundTripMicros: roundTrip),
        .schedule(.heartbeat, at: now.advanced(by: session.heartbeatInterval)),
      ]

    case .renewal(let key):
      guard var run = runs[key] else { return [] }
      if case .awaitingDelivery = run.phase { return [] }
      var actions: [Action] = [.schedule(.renewal(key), at: now.advanced(by: run.leaseDuration / 3))]
      if isConnected {
        if run.renewalSentAt == nil { run.renewalSentAt = now }
        runs[key] = run
        actions.insert(
          .send(
            .with {
              $0.renewal = .with {
                $0.runID = key.runID; $0.fence = key.fence
              }
            }), at: 0)
      }
      return actions

    case .leaseExpiry(let key):
      guard var run = runs[key] else { return [] }
      guard now >= run.leaseExpiry else { return [.schedule(.leaseExpiry(key), at: run.leaseExpiry)] }
      switch run.phase {
      case .awaitingDelivery:
        runs[key] = nil
        return [.log(.warning, "the lease ran out before the result could be delivered; result dropped", run: key)]
          + slotFreed() + checkDrained(now: now)
      case .stopping(let reason) where Self.dropsResult(reason):
        return []
      case .running, .stopping:
        run.phase = .stopping(.leaseExpired)
        runs[key] = run
        return [
          .log(.warning, "self-fencing: the lease ran out on the monotonic clock without a renewal; stopping the run", run: key),
          .stopRun(key, .leaseExpired),
        ]
      }

    case .timeout(let key):
      guard var run = runs[key], case .running = run.phase else { return [] }
      run.phase = .stopping(.timedOut)
      runs[key] = run
      return [.log(.info, "the run's timeout passed; stopping it", run: key), .stopRun(key, .timedOut)]

    case .drainDeadline:
      guard case .draining(let deadline, _) = lifecycle else { return [] }
      lifecycle = .draining(deadline: deadline, expired: true)
      var actions: [Action] = []
      for (key, var run) in runs {
        switch run.phase {
        case .running:
          run.phase = .stopping(.drainGraceExpired)
          runs[key] = run
          actions.append(.stopRun(key, .drainGraceExpired))
        case .awaitingDelivery:
          runs[key] = nil
          actions.append(.cancelTimer(.leaseExpiry(key)))
          actions.append(.log(.warning, "shutting down before the result could be delivered; result dropped", run: key))
        case .stopping:
          break
        }
      }
      if !actions.isEmpty {
        actions.insert(.log(.warning, "the drain grace ran out; stopping \(runs.count) run(s)", run: nil), at: 0)
      }
      return actions + checkDrained(now: now)

    case .closeDeadline:
      guard lifecycle == .closing else { return [] }
      lifecycle = .finished
      link = .idle
      return [.log(.warning, "the coordinator did not end the stream in time; abandoning it", run: nil), .abandonStream, .finish]
    }
  }

  /// A graceful shutdown begins.
  mutating func shutdown(now: Instant) -> [Action] {
    guard lifecycle == .running else { return [] }
    let deadline = now.advanced(by: settings.drainGrace)
    lifecycle = .draining(deadline: deadline, expired: false)
    var actions: [Action] = [
      .log(.info, "draining: no new leases; \(runs.count) run(s) have \(settings.drainGrace) to finish", run: nil),
      .schedule(.drainDeadline, at: deadline),
    ]
    if isConnected { actions.append(.send(Self.draining(settings.drainGrace))) }
    return actions + checkDrained(now: now)
  }

  // MARK: Message handlers

  private mutating func handleRegistered(_ registered: Hourglass_V1_Registered, connection: UInt64, now: Instant) -> [Action] {
    guard case .registering = link else {
      return [.log(.warning, "ignored a second Registered from the coordinator", run: nil)]
    }
    let interval = registered.hasHeartbeatInterval ? Duration(registered.heartbeatInterval.seconds, registered.heartbeatInterval.nanos) : .zero
    let lease = registered.hasLeaseDuration ? Duration(registered.leaseDuration.seconds, registered.leaseDuration.nanos) : .zero
    let session = Session(
      connection: connection,
      coordinatorID: registered.coordinatorID,
      heartbeatInterval: interval > .zero ? interval : settings.heartbeatInterval,
      leaseDuration: lease > .zero ? lease : nil,
      batches: registered.batches
    )
    link = .connected(session)
    failedAttempts = 0
    var actions: [Action] = [
      .log(.info, "registered with coordinator \(registered.coordinatorID)", run: nil),
      .schedule(.heartbeat, at: now.advanced(by: session.heartbeatInterval)),
    ]
    // Results that waited for this connection go first; then renewals of the runs still going.
    for key in runs.keys.sorted(by: { $0.description < $1.description }) {
      guard var run = runs[key] else { continue }
      switch run.phase {
      case .awaitingDelivery(let result):
        runs[key] = nil
        actions.append(.cancelTimer(.leaseExpiry(key)))
        actions.append(.send(.with { $0.result = result }))
      case .running, .stopping:
        run.renewalSentAt = now
        runs[key] = run
        actions.append(
          .send(
            .with {
              $0.renewal = .with {
                $0.runID = key.runID; $0.fence = key.fence
              }
            }))
      }
    }
    switch lifecycle {
    case .running:
      if freeSlots > 0 {
        outstandingCredits += freeSlots
        actions.append(.send(.with { $0.credit = .with { $0.credits = UInt32(freeSlots) } }))
      }
    case .draining(let deadline, _):
      actions.append(.send(Self.draining(max(.zero, now.duration(to: deadline)))))
    case .closing, .finished:
      break
    }
    return actions + checkDrained(now: now)
  }

  private mutating func handleLease(_ grant: Hourglass_V1_LeaseGrant, now: Instant) -> [Action] {
    let key = RunKey(runID: grant.runID, fence: grant.fence)
    guard isConnected else {
      return [.log(.error, "protocol error: the coordinator pushed a lease before Registered; ignored", run: key)]
    }
    guard runs[key] == nil else {
      return [.log(.warning, "the coordinator pushed a lease that is already running; ignored", run: key)]
    }
    guard outstandingCredits > 0 else {
      return [.log(.error, "protocol error: the coordinator pushed a lease without credit; ignored", run: key)]
    }
    outstandingCredits -= 1
    guard settings.operators.contains(grant.operator) else {
      var result = Hourglass_V1_RunResult()
      result.runID = grant.runID
      result.fence = grant.fence
      result.outcome = .failed
      result.exitCode = ExecOperator.notStartedExitCode
      result.error = "this executor has no operator \"\(grant.operator)\""
      return [
        .log(.error, "the coordinator pushed a lease for operator \"\(grant.operator)\", which was not registered", run: key),
        .send(.with { $0.result = result }),
      ]
        + slotFreed()
    }
    let granted = grant.hasLeaseDuration ? Duration(grant.leaseDuration.seconds, grant.leaseDuration.nanos) : .zero
    let sessionLease: Duration? = if case .connected(let session) = link { session.leaseDuration } else { nil }
    let leaseDuration = granted > .zero ? granted : (sessionLease ?? settings.leaseDurationFallback)
    let expiry = now.advanced(by: leaseDuration)
    runs[key] = Run(grant: grant, leaseDuration: leaseDuration, leaseExpiry: expiry, renewalSentAt: nil, phase: .running)
    var actions: [Action] = [
      .schedule(.leaseExpiry(key), at: expiry),
      .schedule(.renewal(key), at: now.advanced(by: leaseDuration / 3)),
    ]
    let timeout = grant.hasTimeout ? Duration(grant.timeout.seconds, grant.timeout.nanos) : .zero
    if timeout > .zero { actions.append(.schedule(.timeout(key), at: now.advanced(by: timeout))) }
    actions.append(.startRun(key, grant))
    return actions
  }

  private mutating func handleHeartbeatAck(_ ack: Hourglass_V1_HeartbeatAck, now: Instant) -> [Action] {
    defer { eligible = ack.eligible }
    if let sentAt = heartbeatsInFlight[ack.sequence] {
      lastRoundTrip = sentAt.duration(to: now)
      heartbeatsInFlight = heartbeatsInFlight.filter { $0.key > ack.sequence }
    }
    if eligible && !ack.eligible {
      return [.log(.warning, "the coordinator finds this executor ineligible for leases: clock skew \(ack.measuredSkewMicros) µs", run: nil)]
    }
    if !eligible && ack.eligible {
      return [.log(.info, "the coordinator finds this executor eligible for leases again (clock skew \(ack.measuredSkewMicros) µs)", run: nil)]
    }
    return []
  }

  private mutating func handleRenewalAck(_ ack: Hourglass_V1_RenewalAck, now: Instant) -> [Action] {
    let key = RunKey(runID: ack.runID, fence: ack.fence)
    guard var run = runs[key] else { return [] }
    if ack.renewed {
      guard let sentAt = run.renewalSentAt else { return [] }
      let granted = ack.hasLeaseDuration ? Duration(ack.leaseDuration.seconds, ack.leaseDuration.nanos) : .zero
      if granted > .zero { run.leaseDuration = granted }
      let expiry = sentAt.advanced(by: run.leaseDuration)
      if expiry > run.leaseExpiry { run.leaseExpiry = expiry }
      run.renewalSentAt = nil
      runs[key] = run
      return [.schedule(.leaseExpiry(key), at: run.leaseExpiry)]
    }
    switch run.phase {
    case .stopping(let reason) where Self.dropsResult(reason):
      return []
    case .awaitingDelivery:
      return []
    case .running, .stopping:
      run.phase = .stopping(.leaseRevoked)
      runs[key] = run
      return [.log(.warning, "the coordinator refused to renew the lease; stopping the run and dropping its result", run: key), .stopRun(key, .leaseRevoked)]
    }
  }

  private mutating func handleCancel(_ cancel: Hourglass_V1_CancelRun) -> [Action] {
    let key = RunKey(runID: cancel.runID, fence: cancel.fence)
    guard var run = runs[key] else {
      return [.log(.info, "the coordinator cancelled a run this executor does not hold", run: key)]
    }
    guard case .running = run.phase else { return [] }
    let reason = RunStopReason.cancelled(reason: cancel.reason)
    run.phase = .stopping(reason)
    runs[key] = run
    return [.log(.info, "cancelling the run: \(cancel.reason)", run: key), .stopRun(key, reason)]
  }

  private static func handleResultAck(_ ack: Hourglass_V1_ResultAck) -> [Action] {
    let key = RunKey(runID: ack.runID, fence: ack.fence)
    return ack.recorded ? [] : [.log(.info, "the coordinator did not record the result: its fence is stale", run: key)]
  }

  /// Whether the coordinator of the current stream takes several results in one
  /// `RunResultBatch`.
  var coordinatorTakesBatches: Bool {
    if case .connected(let session) = link { return session.batches }
    return false
  }

  // MARK: Helpers

  private mutating func connect() -> [Action] {
    nextConnection += 1
    link = .registering(connection: nextConnection)
    outstandingCredits = 0
    heartbeatsInFlight = [:]
    lastRoundTrip = nil
    let register = Hourglass_V1_ExecutorMessage.with {
      $0.register = .with {
        $0.executorID = settings.executorID
        $0.operators = settings.operators
        $0.slots = UInt32(settings.slots)
        $0.version = settings.version
        $0.batches = true
      }
    }
    return [.connect(connection: nextConnection), .send(register)]
  }

  /// A slot became free: hand the coordinator a credit for it, unless shutting down.
  private mutating func slotFreed() -> [Action] {
    guard isConnected, lifecycle == .running else { return [] }
    outstandingCredits += 1
    return [.send(.with { $0.credit = .with { $0.credits = 1 } })]
  }

  /// While draining: once no run is left, close the stream (or stop, without one).
  private mutating func checkDrained(now: Instant) -> [Action] {
    guard case .draining = lifecycle, runs.isEmpty else { return [] }
    var actions: [Action] = [.cancelTimer(.drainDeadline)]
    if currentConnection != nil {
      lifecycle = .closing
      actions += [.closeStream, .schedule(.closeDeadline, at: now.advanced(by: settings.closeTimeout))]
    } else {
      lifecycle = .finished
      link = .idle
      actions += [.cancelTimer(.reconnect), .finish]
    }
    return actions
  }

  private static func dropsResult(_ reason: RunStopReason) -> Bool {
    switch reason {
    case .leaseRevoked, .leaseExpired: true
    case .cancelled, .timedOut, .drainGraceExpired: false
    }
  }

  private static func draining(_ grace: Duration) -> Hourglass_V1_ExecutorMessage {
    .with {
      $0.draining = .with {
        let (seconds, nanos) = grace.protoParts
        $0.grace.seconds = seconds
        $0.grace.nanos = nanos
      }
    }
  }

  static func result(for grant: Hourglass_V1_LeaseGrant, _ outcome: RunOutcome) -> Hourglass_V1_RunResult {
    var result = Hourglass_V1_RunResult()
    result.runID = grant.runID
    result.fence = grant.fence
    switch outcome.status {
    case .succeeded: result.outcome = .succeeded
    case .failed: result.outcome = .failed
    case .timedOut: result.outcome = .timedOut
    case .cancelled: result.outcome = .cancelled
    }
    result.exitCode = outcome.exitCode
    result.error = outcome.error
    result.outputTail = Data(outcome.outputTail)
    let (startedSeconds, startedNanos) = outcome.started.protoParts
    result.started.seconds = startedSeconds
    result.started.nanos = startedNanos
    let (finishedSeconds, finishedNanos) = outcome.finished.protoParts
    result.finished.seconds = finishedSeconds
    result.finished.nanos = finishedNanos
    return result
  }
}

extension Duration {
  /// Whole microseconds (truncated).
  var microseconds: Int64 {
    let (seconds, attoseconds) = components
    return seconds * 1_000_000 + attoseconds / 1_000_000_000_000
  }

  /// A duration from protobuf's seconds and nanoseconds.
  init(_ seconds: Int64, _ nanos: Int32) {
    self = .seconds(seconds) + .nanoseconds(Int64(nanos))
  }

  /// Protobuf's seconds and nanoseconds (same sign).
  var protoParts: (Int64, Int32) {
    let (seconds, attoseconds) = components
    return (seconds, Int32(attoseconds / 1_000_000_000))
  }
}

extension Date {
  /// Protobuf timestamp seconds and nanoseconds.
  var protoParts: (Int64, Int32) {
    let interval = timeIntervalSince1970
    var seconds = Int64(interval.rounded(.down))
    var nanos = Int32(((interval - Double(seconds)) * 1e9).rounded())
    if nanos >= 1_000_000_000 {
      seconds += 1
      nanos -= 1_000_000_000
    }
    return (seconds, nanos)
  }

  /// A date from protobuf timestamp seconds and nanoseconds.
  init(protoSeconds seconds: Int64, nanos: Int32) {
    self.init(timeIntervalSince1970: Double(seconds) + Double(nanos) / 1e9)
  }
}
