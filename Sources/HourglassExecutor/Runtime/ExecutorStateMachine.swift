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
  /// The next heartbeat to coordinator number `n` (an index into the executor's addresses).
  case heartbeat(Int)
  /// The next attempt to reach coordinator number `n`.
  case reconnect(Int)
  /// Coordinator number `n` said `ShuttingDown`: by now it should have ended the stream.
  case leaveDeadline(Int)
  case drainDeadline
  case closeDeadline
  case renewal(RunKey)
  case leaseExpiry(RunKey)
  case timeout(RunKey)
  /// A run leased ahead of its due time starts (the shell holds such runs; see
  /// `LeaseGrant.start_after`).
  case start(RunKey)
}

/// The executor's bookkeeping, without I/O: one link per coordinator it connects to, the slots
/// they share and the credits each holds, every lease and its expiry by the monotonic clock,
/// drain. Each event returns the actions the async shell carries out (send, start or stop a
/// run, arm a timer, log).
///
/// Self-fencing lives here: a lease's expiry is counted from the grant's receipt, then from
/// the sending of each renewal the coordinator acknowledged, plus the lease duration; when its
/// timer fires without a later acknowledged renewal the run is stopped and its result dropped.
///
/// **Slots across coordinators.** Every free slot is a credit held by at most one link, so the
/// coordinators together can never push more leases than there are slots. Free slots go, one at
/// a time, to the connected link holding the fewest credits (ties: the one that used a credit
/// most recently). A link that has used its last credit while no slot is free asks the link
/// holding the most credits (two or more) to withdraw half of them (`CreditWithdrawal`); what
/// that coordinator gives back is handed out again. On each heartbeat a coordinator left with
/// no credit also takes half (its last one included) from one that has not used its credits for
/// a heartbeat interval. Idle coordinators therefore keep about one credit each, and busy ones
/// share the rest; `prefers(_:over:)` has the exact order.
///
/// **Coordinators learnt from the cluster.** A coordinator of a cluster announces the live
/// coordinators that advertise an address (`ClusterPeers`, in `Registered` and every
/// `HeartbeatAck`). With discovery on, the executor opens a link to each announced coordinator
/// it holds none to, and gives up such a link once its stream is down and no registered
/// coordinator announces it any more. Links given at start are never given up. A coordinator
/// reached twice (its given address and its announced one) keeps the given link. Links keep
/// their index for life (timers and runs name them by it): a coordinator announced again
/// reuses its old one.
struct ExecutorStateMachine<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
  enum Action: Sendable {
    /// Open stream number `connection` to coordinator number `coordinator` (its first message,
    /// `Register`, follows as `.send`).
    case connect(connection: UInt64, coordinator: Int)
    /// Coordinator number `coordinator` was announced at `address`: make (or remake) the
    /// transport its streams go through.
    case addCoordinator(Int, address: String)
    /// Coordinator number `coordinator`, learnt from the cluster, is given up: release its
    /// transport.
    case removeCoordinator(Int)
    /// Send `message` on stream `connection`.
    case send(Hourglass_V1_ExecutorMessage, on: UInt64)
    /// Send a heartbeat stamped with the wall clock on stream `connection`.
    case sendHeartbeat(on: UInt64, sequence: UInt64, freeSlots: UInt32, running: UInt32, lastRoundTripMicros: UInt64)
    case startRun(RunKey, Hourglass_V1_LeaseGrant)
    case stopRun(RunKey, RunStopReason)
    case schedule(ExecutorTimer, at: Instant)
    case cancelTimer(ExecutorTimer)
    case log(Logger.Level, String, run: RunKey?)
    /// Half-close stream `connection`: nothing more to send.
    case closeStream(UInt64)
    /// Cancel stream `connection` outright.
    case abandonStream(UInt64)
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
    /// How many coordinators the executor connects to, each on a link of its own.
    var coordinators: Int = 1
    /// Whether coordinators announced by the cluster get links of their own.
    var discovery: Bool = false
    /// Most links to coordinators learnt from the cluster (a bound against a peer announcing
    /// without end).
    var maxDiscovered: Int = 64
  }

  struct Session: Sendable {
    var connection: UInt64
    var coordinatorID: String
    var heartbeatInterval: Duration
    var leaseDuration: Duration?
    /// The coordinator takes `RunResultBatch`.
    var batches: Bool = false
    /// The coordinator answers `CreditWithdrawal`.
    var withdrawals: Bool = false
  }

  /// The stream to one coordinator.
  struct Link: Sendable {
    enum State: Sendable {
      case idle
      case registering(connection: UInt64)
      case connected(Session)
      /// The coordinator is shutting down (`ShuttingDown`): the stream is half-closed and
      /// carries nothing more from this side; it ends when the coordinator has answered.
      case leaving(connection: UInt64)
      case backingOff
    }

    var state: State = .idle
    /// The coordinator's id: announced with it, or learnt when its stream registered (kept
    /// while the stream is down).
    var coordinatorID: String?
    /// Where the coordinator was announced, for a link learnt from the cluster; nil for a
    /// link given at start.
    var announcedAddress: String?
    /// A link learnt from the cluster that is given up: no stream, no retries.
    var retired = false
    /// Given up because this announced address reached another coordinator than the one
    /// announced: not tried again until the coordinator is announced elsewhere.
    var misdirected: String?
    /// The coordinators this one announced last (id → address), while its stream is
    /// registered; nil when it announces none (alone, or an older version).
    var peers: [String: String]?
    /// Leases this coordinator may still push.
    var outstandingCredits = 0
    /// A `CreditWithdrawal` on this stream awaits its answer.
    var withdrawing = false
    /// When this coordinator last used a credit; it is the likelier to need the next one.
    var lastLease: Instant?
    /// This stream has been granted a credit since it registered.
    var granted = false
    var eligible = true
    var failedAttempts = 0
    var heartbeatSequence: UInt64 = 0
    /// Heartbeats awaiting their acknowledgement, by sequence, with when they were sent
    /// (monotonic clock).
    var heartbeatsInFlight: [UInt64: Instant] = [:]
    /// The last heartbeat's round trip, sent with the next one for skew correction.
    var lastRoundTrip: Duration?

    var connection: UInt64? {
      switch state {
      case .registering(let connection), .leaving(let connection): connection
      case .connected(let session): session.connection
      case .idle, .backingOff: nil
      }
    }

    var session: Session? {
      if case .connected(let session) = state { return session }
      return nil
    }

    /// The stream is open and registered.
    var isRegistered: Bool {
      if case .connected = state { return true }
      return false
    }
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
    /// The coordinator that granted the lease: renewals and the result go to it.
    var coordinator: Int
    var leaseDuration: Duration
    var leaseExpiry: Instant
    /// The renewals sent and not yet acknowledged, oldest first, with the stream each went on.
    /// A coordinator answers a stream's renewals in order, so an acknowledgement is for the
    /// oldest of its stream, and the lease is counted from when that one was sent: crediting
    /// a later one (the stream's latest, say) would count the lease from after the coordinator
    /// started it, and the run could outlive it.
    var renewalsInFlight: [RenewalSent] = []
    var phase: Phase
  }

  /// A renewal sent on stream `connection` at `sentAt`.
  struct RenewalSent: Sendable, Equatable {
    var connection: UInt64
    var sentAt: Instant
  }

  /// The most renewals of one run awaiting acknowledgement: past that, none is sent until one is
  /// answered or its stream ends (the lease runs out long before that many go unanswered).
  static var maxRenewalsInFlight: Int { 8 }

  /// A result sent and not yet acknowledged (`ResultAck`). If its stream ends first, it goes
  /// again on another registered stream, or on the first one to register, while its lease
  /// lasts: a coordinator that crashes, or a connection that breaks, with results in flight
  /// does not cost those runs a second execution. It holds no slot: the run is over.
  struct SentResult: Sendable {
    var result: Hourglass_V1_RunResult
    /// The stream it went out on last; nil while no stream is up to carry it.
    var connection: UInt64?
    var leaseExpiry: Instant
    /// Sent more than once: a refusal may only mean that an earlier copy was recorded.
    var resent = false
  }

  /// Heartbeat intervals without an acknowledgement after which the stream is given up.
  static var missedHeartbeatLimit: Int { 3 }

  let settings: Settings
  private(set) var links: [Link]
  private(set) var lifecycle: Lifecycle = .running
  private(set) var runs: [RunKey: Run] = [:]
  /// Results sent and not yet acknowledged, by run.
  private(set) var sentResults: [RunKey: SentResult] = [:]
  /// Results sent again because their stream ended before acknowledging them, since start.
  private(set) var resentResults = 0
  private var nextConnection: UInt64 = 0
  /// Whether the limit of links learnt from the cluster has been logged (once).
  private var discoveryLimitLogged = false

  init(settings: Settings) {
    self.settings = settings
    self.links = Array(repeating: Link(), count: max(1, settings.coordinators))
  }

  var freeSlots: Int { max(0, settings.slots - runs.count) }

  /// Credits held by the coordinators, in all.
  var outstandingCredits: Int { links.reduce(0) { $0 + $1.outstandingCredits } }

  /// Free slots not yet granted to any coordinator.
  private var unassignedSlots: Int { max(0, freeSlots - outstandingCredits) }

  /// Coordinators with a registered stream.
  var connectedCount: Int { links.count(where: \.isRegistered) }

  /// Coordinators the executor keeps a link to: those given at start and those learnt from
  /// the cluster, not given up.
  var knownCount: Int { links.count { !$0.retired } }

  /// Whether every coordinator with a registered stream finds this executor's clock within its
  /// skew bound.
  var eligibleEverywhere: Bool { links.allSatisfy { !$0.isRegistered || $0.eligible } }

  /// The coordinator number of stream `connection`, while that stream is the link's current one.
  func coordinator(of connection: UInt64) -> Int? {
    links.firstIndex { $0.connection == connection }
  }

  /// The last heartbeat round trip on stream `connection`.
  func lastRoundTrip(on connection: UInt64) -> Duration? {
    coordinator(of: connection).flatMap { links[$0].lastRoundTrip }
  }

  /// Whether the coordinator of stream `connection` takes several results in one
  /// `RunResultBatch`.
  func takesBatches(on connection: UInt64) -> Bool {
    coordinator(of: connection).flatMap { links[$0].session?.batches } ?? false
  }

  // MARK: Events

  /// The executor starts: a stream to every coordinator.
  mutating func start(now: Instant) -> [Action] {
    guard lifecycle == .running, links.allSatisfy({ if case .idle = $0.state { true } else { false } }) else { return [] }
    return links.indices.flatMap { connect($0) }
  }

  /// A stream ended (or never opened).
  mutating func connectionEnded(_ connection: UInt64, error: String?, now: Instant, random: Double) -> [Action] {
    guard coordinator(of: connection) != nil else { return [] }
    forgetRenewals(sentOn: connection)
    let actions = linkEnded(connection, error: error, now: now, random: random)
    return actions + redeliverResults(sentOn: connection)
  }

  /// The renewals sent on an ended stream are never acknowledged: an acknowledgement on another
  /// stream must not be taken for one of them.
  private mutating func forgetRenewals(sentOn connection: UInt64) {
    for (key, run) in runs where run.renewalsInFlight.contains(where: { $0.connection == connection }) {
      runs[key]?.renewalsInFlight.removeAll { $0.connection == connection }
    }
  }

  private mutating func linkEnded(_ connection: UInt64, error: String?, now: Instant, random: Double) -> [Action] {
    guard let index = coordinator(of: connection) else { return [] }
    forgetStream(index)
    var actions: [Action] = [.cancelTimer(.heartbeat(index)), .cancelTimer(.leaveDeadline(index))]
    if lifecycle == .closing {
      links[index].state = .idle
      if links.allSatisfy({ $0.connection == nil }) {
        lifecycle = .finished
        return actions + [.cancelTimer(.closeDeadline), .finish]
      }
      return actions
    }
    if case .draining = lifecycle, !runs.values.contains(where: { $0.coordinator == index }),
      !sentResults.values.contains(where: { $0.connection == connection }) || links.indices.contains(where: { $0 != index && links[$0].isRegistered })
    {
      // Nothing of this coordinator's is left to report (its results not acknowledged go again
      // on another stream): no need to reach it again.
      links[index].state = .idle
      return actions + [.log(.info, "the stream to coordinator \(index + 1) ended while draining (\(error ?? "closed by the coordinator"))", run: nil)]
    }
    if lifecycle == .running, let id = links[index].coordinatorID, links[index].announcedAddress != nil,
      let membership = announcedMembership(), membership[id] == nil
    {
      // Learnt from the cluster, which no longer announces it: not worth reaching again.
      return actions + [
        .log(.info, "the stream to \(name(index)) ended (\(error ?? "closed by the coordinator")); no coordinator announces it any more", run: nil)
      ]
        + retire(index) + distributeCredits()
    }
    let delay = settings.backoff.delay(attempt: links[index].failedAttempts, random: random)
    links[index].failedAttempts += 1
    links[index].state = .backingOff
    actions.append(
      .log(.warning, "the stream to \(name(index)) ended (\(error ?? "closed by the coordinator")); reconnecting in \(delay)", run: nil))
    actions.append(.schedule(.reconnect(index), at: now.advanced(by: delay)))
    // Its credits are void: the free slots go to the other coordinators.
    return actions + distributeCredits()
  }

  /// A message from the coordinator on stream `connection`.
  mutating func received(_ message: Hourglass_V1_CoordinatorMessage, on connection: UInt64, now: Instant) -> [Action] {
    guard let index = coordinator(of: connection) else { return [] }
    switch message.kind {
    case .registered(let registered): return handleRegistered(registered, coordinator: index, now: now)
    case .lease(let grant): return handleLease(grant, coordinator: index, now: now) + rebalance(toward: index)
    case .leases(let batch):
      var actions: [Action] = []
      actions.reserveCapacity(batch.grants.count * 3)
      for grant in batch.grants { actions += handleLease(grant, coordinator: index, now: now) }
      return actions + rebalance(toward: index)
    case .heartbeatAck(let ack): return handleHeartbeatAck(ack, coordinator: index, now: now)
    case .renewalAck(let ack): return handleRenewalAck(ack, on: connection)
    case .cancel(let cancel): return handleCancel(cancel)
    case .resultAck(let ack):
      return handleResultAck(ack, now: now)
    case .resultAcks(let batch):
      var actions: [Action] = []
      for ack in batch.acks { actions += handleResultAck(ack, now: now) }
      return actions
    case .withdrawn(let withdrawn):
      return handleWithdrawn(withdrawn, coordinator: index)
    case .shuttingDown:
      return handleShuttingDown(coordinator: index, now: now)
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
      actions += distributeCredits()
      return actions + checkDrained(now: now)
    case .stopping(.drainGraceExpired):
      outcome.status = .failed
      outcome.error = RunStopReason.drainGraceExpired.description
    case .running, .stopping, .awaitingDelivery:
      break
    }
    let result = Self.result(for: run.grant, outcome)
    if let connection = deliveryConnection(for: run) {
      // The lease timer stays armed: it ends the wait for the acknowledgement.
      runs[key] = nil
      actions.append(send(result, of: key, leaseExpiry: run.leaseExpiry, on: connection))
      actions += distributeCredits()
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
    case .reconnect(let index):
      guard links.indices.contains(index), case .backingOff = links[index].state else { return [] }
      switch lifecycle {
      case .running, .draining: return connect(index)
      case .closing, .finished: return []
      }

    case .heartbeat(let index):
      guard links.indices.contains(index), let session = links[index].session else { return [] }
      if let oldest = links[index].heartbeatsInFlight.values.min(),
        oldest.duration(to: now) >= session.heartbeatInterval * Self.missedHeartbeatLimit
      {
        // The coordinator has stopped answering while the stream looks open (a wedged peer or
        // a half-dead connection): give the stream up and reconnect.
        links[index].heartbeatsInFlight = [:]
        return [
          .log(.warning, "no HeartbeatAck from \(name(index)) for \(Self.missedHeartbeatLimit) heartbeat intervals; abandoning the stream", run: nil),
          .abandonStream(session.connection),
        ]
      }
      links[index].heartbeatSequence += 1
      let sequence = links[index].heartbeatSequence
      links[index].heartbeatsInFlight[sequence] = now
      let roundTrip = links[index].lastRoundTrip.map { UInt64(max(0, $0.microseconds)) } ?? 0
      return [
        .sendHeartbeat(
          on: session.connection, sequence: sequence, freeSlots: UInt32(freeSlots), running: UInt32(runs.count), lastRoundTripMicros: roundTrip),
        .schedule(.heartbeat(index), at: now.advanced(by: session.heartbeatInterval)),
      ] + reclaimIdle(toward: index, now: now)

    case .renewal(let key):
      guard var run = runs[key] else { return [] }
      if case .awaitingDelivery = run.phase { return [] }
      var actions: [Action] = [.schedule(.renewal(key), at: now.advanced(by: Self.renewalPeriod(run.leaseDuration)))]
      if let connection = deliveryConnection(for: run), run.renewalsInFlight.count < Self.maxRenewalsInFlight {
        run.renewalsInFlight.append(RenewalSent(connection: connection, sentAt: now))
        runs[key] = run
        actions.insert(.send(Self.renewal(key), on: connection), at: 0)
      }
      return actions

    case .leaseExpiry(let key):
      guard var run = runs[key] else {
        guard let sent = sentResults[key] else { return [] }
        guard now >= sent.leaseExpiry else { return [.schedule(.leaseExpiry(key), at: sent.leaseExpiry)] }
        sentResults[key] = nil
        return [.log(.warning, "the result was not acknowledged before its lease ran out; it is no longer sent again", run: key)]
          + checkDrained(now: now)
      }
      guard now >= run.leaseExpiry else { return [.schedule(.leaseExpiry(key), at: run.leaseExpiry)] }
      switch run.phase {
      case .awaitingDelivery:
        runs[key] = nil
        return [.log(.warning, "the lease ran out before the result could be delivered; result dropped", run: key)]
          + distributeCredits() + checkDrained(now: now)
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

    case .start:
      // The shell's own: it starts the held run and never hands this timer here.
      return []

    case .timeout(let key):
      guard var run = runs[key], case .running = run.phase else { return [] }
      run.phase = .stopping(.timedOut)
      runs[key] = run
      return [.log(.info, "the run's timeout passed; stopping it", run: key), .stopRun(key, .timedOut)]

    case .leaveDeadline(let index):
      guard links.indices.contains(index), case .leaving(let connection) = links[index].state else { return [] }
      return [.log(.warning, "\(name(index)) said it was shutting down but has not ended its stream; abandoning it", run: nil), .abandonStream(connection)]

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
      var actions: [Action] = [.log(.warning, "a coordinator did not end its stream in time; abandoning it", run: nil)]
      for index in links.indices {
        if let connection = links[index].connection { actions.append(.abandonStream(connection)) }
        links[index].state = .idle
      }
      return actions + [.finish]
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
    for index in links.indices {
      if let session = links[index].session {
        actions.append(.send(Self.draining(settings.drainGrace), on: session.connection))
      } else if !runs.values.contains(where: { $0.coordinator == index }) {
        // Not connected and owing this coordinator nothing: stop trying to reach it.
        if case .backingOff = links[index].state {
          links[index].state = .idle
          actions.append(.cancelTimer(.reconnect(index)))
        }
      }
    }
    return actions + checkDrained(now: now)
  }

  // MARK: Message handlers

  private mutating func handleRegistered(_ registered: Hourglass_V1_Registered, coordinator index: Int, now: Instant) -> [Action] {
    guard case .registering(let connection) = links[index].state else {
      return [.log(.warning, "ignored a second Registered from \(name(index))", run: nil)]
    }
    let interval = registered.hasHeartbeatInterval ? Duration(registered.heartbeatInterval.seconds, registered.heartbeatInterval.nanos) : .zero
    let lease = registered.hasLeaseDuration ? Duration(registered.leaseDuration.seconds, registered.leaseDuration.nanos) : .zero
    let session = Session(
      connection: connection,
      coordinatorID: registered.coordinatorID,
      // At least 100 ms: a coordinator's nanosecond interval would make heartbeats a busy loop.
      heartbeatInterval: interval > .zero ? max(interval, .milliseconds(100)) : settings.heartbeatInterval,
      leaseDuration: lease > .zero ? lease : nil,
      batches: registered.batches,
      withdrawals: registered.withdrawals
    )
    var actions: [Action] = []
    if let address = links[index].announcedAddress, let announced = links[index].coordinatorID, announced != registered.coordinatorID {
      // A wrong --advertise: that address is another coordinator's.
      actions.append(
        .log(.warning, "\(address), announced for coordinator \(announced), reaches coordinator \(registered.coordinatorID); not using it", run: nil))
      actions += retire(index)
      links[index].misdirected = address
      return actions
    }
    if let twin = twin(of: index, id: registered.coordinatorID) {
      // Two links to one coordinator: the one learnt from the cluster goes.
      if links[index].announcedAddress != nil {
        return [.log(.info, "coordinator \(registered.coordinatorID) is already reached through another address; dropping this one", run: nil)]
          + retire(index)
      }
      actions += [.log(.info, "coordinator \(registered.coordinatorID) is reached through its given address; dropping the announced one", run: nil)]
      actions += retire(twin)
      for (key, run) in runs where run.coordinator == twin { runs[key]?.coordinator = index }
    }
    links[index].coordinatorID = registered.coordinatorID
    links[index].state = .connected(session)
    links[index].failedAttempts = 0
    links[index].granted = false
    actions += [
      .log(.info, "registered with coordinator \(registered.coordinatorID)", run: nil),
      // The first heartbeat at once: the coordinator measures this executor's clock skew from
      // it, and an executor outside the bound should get no leases for a heartbeat interval.
      .schedule(.heartbeat(index), at: now),
    ]
    // Results that waited for a connection go first (whichever coordinator granted them: any
    // coordinator of the cluster records a result by its fence); then renewals of this
    // coordinator's runs, and of every run if no other stream was up to carry them.
    let othersUp = links.indices.contains { $0 != index && links[$0].isRegistered }
    for key in runs.keys.sorted(by: { $0.description < $1.description }) {
      guard var run = runs[key] else { continue }
      switch run.phase {
      case .awaitingDelivery(let result):
        runs[key] = nil
        actions.append(send(result, of: key, leaseExpiry: run.leaseExpiry, on: connection))
      case .running, .stopping:
        guard run.coordinator == index || !othersUp, run.renewalsInFlight.count < Self.maxRenewalsInFlight else { continue }
        run.renewalsInFlight.append(RenewalSent(connection: connection, sentAt: now))
        runs[key] = run
        actions.append(.send(Self.renewal(key), on: connection))
      }
    }
    // Results sent on a stream that ended before acknowledging them, with no other stream up.
    for key in sentResults.keys.sorted(by: { $0.description < $1.description }) where sentResults[key]?.connection == nil {
      if let resent = resend(key, on: connection) { actions.append(resent) }
    }
    switch lifecycle {
    case .running:
      if registered.hasCluster { actions += learn(registered.cluster, from: index) }
      actions += distributeCredits() + rebalance(toward: index)
    case .draining(let deadline, _):
      actions.append(.send(Self.draining(max(.zero, now.duration(to: deadline))), on: connection))
    case .closing, .finished:
      break
    }
    return actions + checkDrained(now: now)
  }

  private mutating func handleLease(_ grant: Hourglass_V1_LeaseGrant, coordinator index: Int, now: Instant) -> [Action] {
    let key = RunKey(runID: grant.runID, fence: grant.fence)
    guard let session = links[index].session else {
      return [.log(.error, "protocol error: the coordinator pushed a lease before Registered; ignored", run: key)]
    }
    guard runs[key] == nil else {
      return [.log(.warning, "the coordinator pushed a lease that is already running; ignored", run: key)]
    }
    guard links[index].outstandingCredits > 0 else {
      return [.log(.error, "protocol error: the coordinator pushed a lease without credit; ignored", run: key)]
    }
    links[index].outstandingCredits -= 1
    links[index].lastLease = now
    switch lifecycle {
    case .running, .draining(_, expired: false):
      break
    case .draining(_, expired: true):
      // Sent before the coordinator read Draining. The grace is over: the run would only be
      // stopped, so it is not started, and reported at once as the runs stopped were.
      return [
        .log(.warning, "a lease arrived after the drain's grace ran out; not started", run: key),
        .send(.with { $0.result = Self.notStarted(grant, because: "not started: \(RunStopReason.drainGraceExpired)") }, on: session.connection),
      ]
    case .closing, .finished:
      // This executor's side of the stream is closed: nothing can be reported, and a child
      // started now would be killed when the stream ends. The lease runs out on the
      // coordinator, which then sends the run elsewhere.
      return [.log(.warning, "a lease arrived after this executor closed its streams; not started, its lease runs out", run: key)]
    }
    guard settings.operators.contains(grant.operator) else {
      return [
        .log(.error, "the coordinator pushed a lease for operator \"\(grant.operator)\", which was not registered", run: key),
        .send(.with { $0.result = Self.notStarted(grant, because: "this executor has no operator \"\(grant.operator)\"") }, on: session.connection),
      ]
        + distributeCredits()
    }
    let granted = grant.hasLeaseDuration ? Duration(grant.leaseDuration.seconds, grant.leaseDuration.nanos) : .zero
    let leaseDuration = granted > .zero ? granted : (session.leaseDuration ?? settings.leaseDurationFallback)
    let expiry = now.advanced(by: leaseDuration)
    runs[key] = Run(grant: grant, coordinator: index, leaseDuration: leaseDuration, leaseExpiry: expiry, phase: .running)
    var actions: [Action] = [
      .schedule(.leaseExpiry(key), at: expiry),
      .schedule(.renewal(key), at: now.advanced(by: Self.renewalPeriod(leaseDuration))),
    ]
    // The timeout counts from the run's start: for a run held until its due time, from then.
    let timeout = grant.hasTimeout ? Duration(grant.timeout.seconds, grant.timeout.nanos) : .zero
    let startAfter = grant.hasStartAfter ? max(.zero, Duration(grant.startAfter.seconds, grant.startAfter.nanos)) : .zero
    if timeout > .zero { actions.append(.schedule(.timeout(key), at: now.advanced(by: startAfter + timeout))) }
    actions.append(.startRun(key, grant))
    return actions
  }

  /// The FAILED result of a lease this executor did not start, with `reason` as its error.
  private static func notStarted(_ grant: Hourglass_V1_LeaseGrant, because reason: String) -> Hourglass_V1_RunResult {
    var result = Hourglass_V1_RunResult()
    result.runID = grant.runID
    result.fence = grant.fence
    result.outcome = .failed
    result.exitCode = ExecOperator.notStartedExitCode
    result.error = reason
    return result
  }

  private mutating func handleHeartbeatAck(_ ack: Hourglass_V1_HeartbeatAck, coordinator index: Int, now: Instant) -> [Action] {
    let learnt = ack.hasCluster ? learn(ack.cluster, from: index) : []
    return learnt + handleEligibility(ack, coordinator: index, now: now)
  }

  private mutating func handleEligibility(_ ack: Hourglass_V1_HeartbeatAck, coordinator index: Int, now: Instant) -> [Action] {
    let wasEligible = links[index].eligible
    links[index].eligible = ack.eligible
    var firstRoundTrip = false
    if let sentAt = links[index].heartbeatsInFlight[ack.sequence] {
      firstRoundTrip = links[index].lastRoundTrip == nil
      links[index].lastRoundTrip = sentAt.duration(to: now)
      links[index].heartbeatsInFlight = links[index].heartbeatsInFlight.filter { $0.key > ack.sequence }
    }
    // The stream's first heartbeat carries no round trip, so its whole transit time counts as
    // skew: on a loaded link that alone can put an executor outside the bound. Measured again at
    // once, with the round trip now known, rather than a whole interval later.
    let remeasure: [Action] = firstRoundTrip && !ack.eligible ? [.schedule(.heartbeat(index), at: now)] : []
    if wasEligible && !ack.eligible {
      return [.log(.warning, "\(name(index)) finds this executor ineligible for leases: clock skew \(ack.measuredSkewMicros) µs", run: nil)]
        + remeasure
    }
    if !wasEligible && ack.eligible {
      // Its credits went elsewhere meanwhile: draw some back now rather than wait for a lease.
      return [.log(.info, "\(name(index)) finds this executor eligible for leases again (clock skew \(ack.measuredSkewMicros) µs)", run: nil)]
        + distributeCredits() + rebalance(toward: index) + reclaimIdle(toward: index, now: now)
    }
    return remeasure
  }

  /// How often a run's lease is renewed: a third of it, and at most once a millisecond, so that
  /// a coordinator granting a lease of nanoseconds makes renewals a bounded trickle until the
  /// lease runs out, not a busy loop. (The lease itself is never lengthened: the run is still
  /// stopped at its expiry.)
  static func renewalPeriod(_ lease: Duration) -> Duration { max(lease / 3, .milliseconds(1)) }

  private mutating func handleRenewalAck(_ ack: Hourglass_V1_RenewalAck, on connection: UInt64) -> [Action] {
    let key = RunKey(runID: ack.runID, fence: ack.fence)
    guard var run = runs[key] else { return [] }
    // The acknowledged renewal: the oldest sent on this stream.
    let acknowledged = run.renewalsInFlight.firstIndex { $0.connection == connection }.map { run.renewalsInFlight.remove(at: $0) }
    runs[key] = run
    if ack.renewed {
      guard let sentAt = acknowledged?.sentAt else { return [] }
      let granted = ack.hasLeaseDuration ? Duration(ack.leaseDuration.seconds, ack.leaseDuration.nanos) : .zero
      if granted > .zero { run.leaseDuration = granted }
      let expiry = sentAt.advanced(by: run.leaseDuration)
      if expiry > run.leaseExpiry { run.leaseExpiry = expiry }
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

  private mutating func handleResultAck(_ ack: Hourglass_V1_ResultAck, now: Instant) -> [Action] {
    let key = RunKey(runID: ack.runID, fence: ack.fence)
    let sent = sentResults.removeValue(forKey: key)
    var actions: [Action] = sent == nil ? [] : [.cancelTimer(.leaseExpiry(key))]
    if !ack.recorded {
      let why = sent?.resent == true ? "an earlier copy was recorded, or the fence is stale" : "its fence is stale"
      actions.append(.log(.info, "the coordinator did not record the result: \(why)", run: key))
    }
    return actions + checkDrained(now: now)
  }

  /// Sends the result of run `key` on `connection` and keeps it until it is acknowledged.
  private mutating func send(_ result: Hourglass_V1_RunResult, of key: RunKey, leaseExpiry: Instant, on connection: UInt64) -> Action {
    sentResults[key] = SentResult(result: result, connection: connection, leaseExpiry: leaseExpiry)
    return .send(.with { $0.result = result }, on: connection)
  }

  /// Sends the kept result of run `key` again, on `connection`.
  private mutating func resend(_ key: RunKey, on connection: UInt64) -> Action? {
    guard var sent = sentResults[key] else { return nil }
    sent.connection = connection
    sent.resent = true
    sentResults[key] = sent
    resentResults += 1
    return .send(.with { $0.result = sent.result }, on: connection)
  }

  /// Stream `connection` has ended: its unacknowledged results go again on another registered
  /// stream, or wait for the next one to register. Not while closing, when no stream takes more.
  private mutating func redeliverResults(sentOn connection: UInt64) -> [Action] {
    let stranded = sentResults.filter { $0.value.connection == connection }.keys.sorted { $0.description < $1.description }
    guard !stranded.isEmpty else { return [] }
    let target: UInt64? =
      switch lifecycle {
      case .running, .draining: anyRegisteredConnection
      case .closing, .finished: nil
      }
    var actions: [Action] = []
    for key in stranded {
      sentResults[key]?.connection = nil
      if let target, let resent = resend(key, on: target) { actions.append(resent) }
    }
    let whither = target == nil ? "they wait for a stream" : "sent again on another stream"
    return [.log(.info, "\(stranded.count) result(s) were not acknowledged before their stream ended; \(whither)", run: nil)] + actions
  }

  /// The coordinator is shutting down: half-close its stream, move its credits to the others,
  /// and report its runs through them (or, with none, once a coordinator is back).
  private mutating func handleShuttingDown(coordinator index: Int, now: Instant) -> [Action] {
    guard let session = links[index].session else { return [] }
    let connection = session.connection
    links[index].state = .leaving(connection: connection)
    forgetStream(index)
    return [
      .log(.info, "\(name(index)) is shutting down; ending its stream", run: nil),
      .cancelTimer(.heartbeat(index)),
      .closeStream(connection),
      // A coordinator that answers nothing more is not waited for beyond what heartbeats allow.
      .schedule(.leaveDeadline(index), at: now.advanced(by: session.heartbeatInterval * Self.missedHeartbeatLimit)),
    ] + distributeCredits()
  }

  private mutating func handleWithdrawn(_ withdrawn: Hourglass_V1_CreditsWithdrawn, coordinator index: Int) -> [Action] {
    guard links[index].withdrawing else {
      return [.log(.warning, "ignored CreditsWithdrawn from \(name(index)), which was not asked", run: nil)]
    }
    links[index].withdrawing = false
    // Leases sent before the answer have already been counted; never below zero.
    links[index].outstandingCredits -= min(Int(withdrawn.credits), links[index].outstandingCredits)
    return distributeCredits()
  }

  // MARK: Helpers

  /// Link `index`'s stream no longer carries its coordinator's work: the credits it held, a
  /// withdrawal it awaited and the peers it announced are void.
  private mutating func forgetStream(_ index: Int) {
    links[index].outstandingCredits = 0
    links[index].withdrawing = false
    links[index].peers = nil
  }

  private func name(_ index: Int) -> String {
    if let id = links[index].coordinatorID, !id.isEmpty { return "coordinator \(id)" }
    return links.count == 1 ? "the coordinator" : "coordinator \(index + 1) of \(links.count)"
  }

  private mutating func connect(_ index: Int) -> [Action] {
    nextConnection += 1
    links[index].state = .registering(connection: nextConnection)
    forgetStream(index)
    links[index].heartbeatsInFlight = [:]
    links[index].lastRoundTrip = nil
    let register = Hourglass_V1_ExecutorMessage.with {
      $0.register = .with {
        $0.executorID = settings.executorID
        $0.operators = settings.operators
        $0.slots = UInt32(settings.slots)
        $0.version = settings.version
        $0.batches = true
      }
    }
    return [.connect(connection: nextConnection, coordinator: index), .send(register, on: nextConnection)]
  }

  // MARK: Coordinators learnt from the cluster

  /// Coordinator `index` announced `peers`: open a link to each one no link reaches, and give
  /// up the links learnt earlier that no registered coordinator announces and whose stream is
  /// down. Nothing unless discovery is on and the executor is running.
  private mutating func learn(_ peers: Hourglass_V1_ClusterPeers, from index: Int) -> [Action] {
    var announced: [String: String] = [:]
    for peer in peers.coordinators where !peer.coordinatorID.isEmpty && !peer.address.isEmpty {
      announced[peer.coordinatorID] = peer.address
    }
    links[index].peers = announced
    guard settings.discovery, lifecycle == .running, let membership = announcedMembership() else { return [] }
    var actions: [Action] = []
    for (id, address) in membership.sorted(by: { $0.key < $1.key }) {
      if let known = links.firstIndex(where: { !$0.retired && $0.coordinatorID == id }) {
        // A learnt coordinator now announced elsewhere, while its stream is down: reach it there.
        if let old = links[known].announcedAddress, old != address, case .backingOff = links[known].state {
          links[known].announcedAddress = address
          actions.append(.log(.info, "\(name(known)) is now announced at \(address)", run: nil))
          actions.append(.addCoordinator(known, address: address))
        }
        continue
      }
      let slot: Int
      if let retired = links.firstIndex(where: { $0.retired && $0.coordinatorID == id }) {
        if links[retired].misdirected == address { continue }
        slot = retired
      } else if links.count(where: { $0.announcedAddress != nil || $0.retired }) < settings.maxDiscovered {
        links.append(Link())
        slot = links.count - 1
      } else {
        if !discoveryLimitLogged {
          discoveryLimitLogged = true
          actions.append(
            .log(.warning, "the cluster announces more coordinators than this executor connects to (\(settings.maxDiscovered)); ignoring the rest", run: nil))
        }
        continue
      }
      links[slot] = Link()
      links[slot].coordinatorID = id
      links[slot].announcedAddress = address
      actions.append(.log(.info, "connecting to coordinator \(id) at \(address), announced by \(name(index))", run: nil))
      actions.append(.addCoordinator(slot, address: address))
      actions += connect(slot)
    }
    for other in links.indices where links[other].announcedAddress != nil && !links[other].retired {
      guard let id = links[other].coordinatorID, membership[id] == nil, case .backingOff = links[other].state else { continue }
      actions.append(.log(.info, "\(name(other)) is no longer announced; giving it up", run: nil))
      actions += retire(other)
    }
    return actions
  }

  /// The coordinators the registered ones announce, together; nil when none announces any
  /// (then nothing is known to be gone).
  private func announcedMembership() -> [String: String]? {
    var membership: [String: String]?
    for link in links where link.isRegistered {
      guard let peers = link.peers else { continue }
      membership = (membership ?? [:]).merging(peers) { first, _ in first }
    }
    return membership
  }

  /// Another link that reaches coordinator `id`, where one of the two was learnt from the
  /// cluster (two given addresses of one coordinator are the operator's choice).
  private func twin(of index: Int, id: String) -> Int? {
    links.indices.first { other in
      other != index && !links[other].retired && links[other].coordinatorID == id
        && (links[other].announcedAddress != nil || links[index].announcedAddress != nil)
    }
  }

  /// Gives up link `index` (learnt from the cluster): its stream, timers, credits and transport.
  /// Its runs report through the other links, as any run whose coordinator is down does.
  private mutating func retire(_ index: Int) -> [Action] {
    var actions: [Action] = [.cancelTimer(.heartbeat(index)), .cancelTimer(.reconnect(index)), .cancelTimer(.leaveDeadline(index))]
    let connection = links[index].connection
    if let connection { actions.append(.abandonStream(connection)) }
    let id = links[index].coordinatorID
    links[index] = Link()
    links[index].coordinatorID = id
    links[index].retired = true
    actions.append(.removeCoordinator(index))
    // Its stream's end will not be reported for a link it no longer is.
    if let connection { actions += redeliverResults(sentOn: connection) }
    return actions
  }

  /// The stream a run's renewals and result go on: its own coordinator's, or while that one is
  /// down any other registered one. The coordinators an executor connects to share one store,
  /// where renewals and results are checked against the run's own fence, so any of them can take
  /// them; a coordinator that restarts or moves its partitions does not cost the result.
  private func deliveryConnection(for run: Run) -> UInt64? {
    links[run.coordinator].session?.connection ?? anyRegisteredConnection
  }

  /// The stream of the first registered coordinator, if any is.
  private var anyRegisteredConnection: UInt64? {
    links.lazy.compactMap { $0.session?.connection }.first
  }

  /// Grants the slots no coordinator holds a credit for, one at a time to the registered
  /// coordinator holding the fewest (ties: the one that used a credit last; one that is asked
  /// to give credits back gets none meanwhile). Nothing while shutting down.
  private mutating func distributeCredits() -> [Action] {
    guard lifecycle == .running else { return [] }
    var free = unassignedSlots
    guard free > 0 else { return [] }
    var granted = Array(repeating: 0, count: links.count)
    while free > 0 {
      var best: Int?
      for index in links.indices where links[index].isRegistered && !links[index].withdrawing {
        guard let current = best else {
          best = index
          continue
        }
        if Self.prefers(links[index], over: links[current]) { best = index }
      }
      guard let chosen = best else { break }
      links[chosen].outstandingCredits += 1
      links[chosen].granted = true
      granted[chosen] += 1
      free -= 1
    }
    var actions: [Action] = []
    for index in links.indices where granted[index] > 0 {
      guard let connection = links[index].session?.connection else { continue }
      actions.append(.send(.with { $0.credit = .with { $0.credits = UInt32(granted[index]) } }, on: connection))
    }
    return actions
  }

  /// Whether a free slot goes to link `a` rather than `b`: one the coordinator can use (clock
  /// in bounds), then the fewest credits, then one not yet granted any since it registered (so
  /// every coordinator gets a first credit), then the one that leased last.
  private static func prefers(_ a: Link, over b: Link) -> Bool {
    if a.eligible != b.eligible { return a.eligible }
    if a.outstandingCredits != b.outstandingCredits { return a.outstandingCredits < b.outstandingCredits }
    if a.granted != b.granted { return !a.granted }
    switch (a.lastLease, b.lastLease) {
    case (let x?, let y?): return x > y
    case (.some, nil): return true
    case (nil, _): return false
    }
  }

  /// Coordinator `needy` has no credit left and no slot is free: ask the coordinator holding
  /// the most credits (at least two) for half of them back.
  private mutating func rebalance(toward needy: Int) -> [Action] {
    askBack(toward: needy, minimum: 2, share: { $0 / 2 }) { _, _ in true }
  }

  /// On coordinator `needy`'s heartbeat: it holds no credit and no slot is free, while another
  /// coordinator holds credits it has not used for a heartbeat interval. Leases alone cannot
  /// show that `needy` needs one (it has none to use), so this takes half of the idle one's
  /// credits, its last one included, when `needy` has leased more recently than it or has not
  /// had a credit since it registered.
  private mutating func reclaimIdle(toward needy: Int, now: Instant) -> [Action] {
    guard links[needy].eligible else { return [] }
    let mine = links[needy]
    return askBack(toward: needy, minimum: 1, share: { ($0 + 1) / 2 }) { donor, session in
      if let last = donor.lastLease, last.duration(to: now) < session.heartbeatInterval { return false }
      guard mine.granted else { return true }
      guard let myLast = mine.lastLease else { return false }
      if let theirs = donor.lastLease, theirs >= myLast { return false }
      return true
    }
  }

  /// Sends a `CreditWithdrawal` for `share(credits)` to the coordinator (other than `needy`,
  /// answering withdrawals, none pending) that holds the most credits, at least `minimum`, among
  /// those `qualifies` accepts; nothing unless `needy` is registered with no credit while no
  /// slot is free and the executor is running.
  private mutating func askBack(
    toward needy: Int, minimum: Int, share: (Int) -> Int, qualifies: (Link, Session) -> Bool
  ) -> [Action] {
    guard lifecycle == .running, links.count > 1, links[needy].isRegistered, links[needy].outstandingCredits == 0,
      unassignedSlots == 0
    else { return [] }
    var donor: Int?
    for index in links.indices where index != needy {
      let link = links[index]
      guard let session = link.session, session.withdrawals, !link.withdrawing, link.outstandingCredits >= minimum, qualifies(link, session) else {
        continue
      }
      if donor == nil || link.outstandingCredits > links[donor!].outstandingCredits { donor = index }
    }
    guard let donor, let connection = links[donor].session?.connection else { return [] }
    links[donor].withdrawing = true
    let count = share(links[donor].outstandingCredits)
    return [.send(.with { $0.withdrawal = .with { $0.credits = UInt32(count) } }, on: connection)]
  }

  /// While draining: once no run is left, close every stream (or stop, without any).
  private mutating func checkDrained(now: Instant) -> [Action] {
    // Results not yet acknowledged keep the streams: one that breaks before its ResultAck is
    // sent again (promise 10), until its lease runs out.
    guard case .draining = lifecycle, runs.isEmpty, sentResults.isEmpty else { return [] }
    var actions: [Action] = [.cancelTimer(.drainDeadline)]
    if links.contains(where: { $0.connection != nil }) {
      lifecycle = .closing
      for index in links.indices {
        switch links[index].state {
        case .connected(let session): actions.append(.closeStream(session.connection))
        // Half-closed already; the coordinator ends it.
        case .leaving: break
        // Not registered yet (perhaps never will be): nothing to say on it.
        case .registering(let connection): actions.append(.abandonStream(connection))
        case .backingOff:
          links[index].state = .idle
          actions.append(.cancelTimer(.reconnect(index)))
        case .idle: break
        }
      }
      actions.append(.schedule(.closeDeadline, at: now.advanced(by: settings.closeTimeout)))
    } else {
      lifecycle = .finished
      for index in links.indices {
        links[index].state = .idle
        actions.append(.cancelTimer(.reconnect(index)))
      }
      actions.append(.finish)
    }
    return actions
  }

  private static func renewal(_ key: RunKey) -> Hourglass_V1_ExecutorMessage {
    .with {
      $0.renewal = .with {
        $0.runID = key.runID; $0.fence = key.fence
      }
    }
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

  /// A duration from protobuf's seconds and nanoseconds, clamped to the type's range (about
  /// ±10,000 years): a coordinator's nonsense (2^63 seconds) must not make a timer's deadline
  /// overflow when the executor sleeps until it.
  init(_ seconds: Int64, _ nanos: Int32) {
    self =
      .seconds(min(max(seconds, ProtoTime.durationSeconds.lowerBound), ProtoTime.durationSeconds.upperBound))
      + .nanoseconds(Int64(nanos))
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

  /// A date from protobuf timestamp seconds and nanoseconds, clamped to the type's range
  /// (years 1 to 9999): whatever a coordinator sends, the date can be formatted.
  init(protoSeconds seconds: Int64, nanos: Int32) {
    let seconds = min(max(seconds, ProtoTime.timestampSeconds.lowerBound), ProtoTime.timestampSeconds.upperBound)
    self.init(timeIntervalSince1970: Double(seconds) + Double(nanos) / 1e9)
  }
}
