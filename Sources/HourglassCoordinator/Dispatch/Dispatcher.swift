import Foundation
import HourglassCore
import HourglassProto
import HourglassRPC
import HourglassStore
import Logging
import Synchronization

/// Pushes due runs to executors: keeps the due-time queue filled from the store a little ahead of
/// time, waits for each run's due time, picks an executor holding a credit for its operator,
/// creates the lease (a fresh fence) in the store and sends it on that executor's stream.
///
/// Dispatch cost follows what is due: the store is asked only for the entries of the window
/// about to come due, shard by shard (partition × hour bucket), never for every task.
actor Dispatcher {
  /// A connected executor's stream, as the dispatcher sees it.
  struct Session: Sendable {
    var executorID: String
    /// The executor takes `LeaseGrantBatch`.
    var batches: Bool
    /// Its slot count.
    var slots: Int
    /// Its grants not yet written (shared with its ``ExecutorPool`` member).
    var unwritten: UnwrittenGrants
    var send: @Sendable (Hourglass_V1_CoordinatorMessage) async throws -> Void
  }

  /// A lease this coordinator granted and has not seen the end of.
  struct ActiveLease: Sendable {
    var session: UInt64
    var fence: Fence
    /// The task as read when the lease was granted, and the lease's attempt: what planning the
    /// result needs, so a result does not read the store again (the fence is still checked by
    /// the store's compare-and-set when it is recorded).
    var task: TaskRecord
    var attempt: Int32
    /// Overlap allowed: the task moved on when this run was leased; its result records the run
    /// only.
    var detached: Bool
  }

  let store: any TaskStore
  let clock: any CoordinatorClock
  let configuration: CoordinatorConfiguration
  let logger: Logger
  let metrics: CoordinatorMetrics
  var queue = DueQueue()
  private(set) var pool = ExecutorPool()
  var sessions: [UInt64: Session] = [:]
  var leases: [RunID: ActiveLease] = [:]
  /// Runs cancelled while this coordinator knew no lease of theirs, with when: a batch whose
  /// lease transaction committed just before the delete's may not have recorded its lease yet,
  /// and must not send its grant. Forgotten after a lease duration.
  var cancelledUnseen: [RunID: Int64] = [:]
  /// Runs whose lease the dispatch loop has recorded but whose grant it has not yet handed to
  /// the outbox: a cancel meanwhile drops the grant instead of overtaking it.
  var unsentGrants: Set<RunID> = []
  /// Tasks whose run ``dispatchReady()`` took from the queue and has not leased or put back
  /// yet: a read of due entries that began before their lease committed (the sweep, a
  /// partition's backlog) must not queue them again.
  var leasing: Set<TaskID> = []
  var loadedUntil: Int64 = .min
  /// After a load failed, neither the loader nor the dispatch loop loads before this instant:
  /// the window is read again then, and a store that fails is not asked in a tight loop.
  var loadRetryMicros: Int64 = .min
  /// How long after a failed load the next one is tried.
  static let loadRetryDelayMicros: Int64 = 1_000_000
  /// The store's partition leases when several coordinators share it (PostgreSQL); nil when
  /// this coordinator dispatches every partition (SQLite).
  let cluster: (any PartitionLeasing)?
  /// In a cluster, the partitions this coordinator holds and their epochs (empty until the
  /// first pass of ``keepPartitions()``); nil: every partition, unfenced.
  var ownership: PartitionFence?
  /// In a cluster, this process among those of its coordinator id, from the store's sequence at
  /// the first ownership pass: a restart under the same id takes the partitions back with new
  /// epochs, fencing a former process that still runs (paused).
  var incarnation: Int64?
  /// In a cluster, whether a later process of this coordinator's id has been seen: this one then
  /// dispatches nothing more.
  var superseded = false
  /// In a cluster, whether this coordinator's clock was beyond `clusterClockBoundMicros` of the
  /// database's at the last measurement: it then dispatches nothing.
  var clockBeyondBound = false
  /// While ``clockBeyondBound``, the measured offset (this clock minus the database's), which
  /// the lease renewals this coordinator still answers take off their expiry; 0 otherwise.
  nonisolated let clockCorrectionMicros = Atomic<Int64>(0)
  /// Notices for other coordinators, sent by ``publishNotices()``.
  var outgoingNotices: [ClusterNotice] = []
  let noticeWake = WakeSignal()
  /// In a cluster, partitions taken whose backlog could not be read yet (retried at each pass).
  var backlogsToLoad: Set<Partition> = []
  /// In a cluster, when the partition leases last renewed run out.
  var partitionsExpireAt: Int64?
  /// In a cluster, whether this coordinator is in the membership (it is while it has executors).
  var joinedCluster = false
  /// In a cluster, the live coordinators that advertise an address, as the last membership pass
  /// read them (this one included if it advertises): announced to executors in `Registered`
  /// and `HeartbeatAck`. nil outside a cluster or before the first pass.
  var clusterPeers: [CoordinatorMember]?
  /// Wakes ``keepPartitions()`` early (an executor connected to a coordinator not yet joined).
  let ownershipWake = WakeSignal()
  /// Waiting for this coordinator to own a number of partitions (a signal for tests).
  var ownershipWaiters = CountWaiters()
  /// In a cluster, how many times the notice subscription started, and how many `due` notices
  /// arrived, with those waiting for either (signals for tests).
  var noticeSubscriptions = 0
  var noticeSubscriptionWaiters = CountWaiters()
  /// In a cluster, the notice subscriptions' tasks, by generation, until each ends: one, and two
  /// while a newer one replaces a silent one (the older is cancelled once the newer listens).
  var noticeListeners: [Int: Task<Void, Never>] = [:]
  /// The newest subscription's generation and when its latest attempt to listen began, and the
  /// newest that has listened.
  var noticeGeneration = 0
  var noticeAttemptStartedAt: Int64?
  var listeningGeneration = 0
  /// Whether the dispatcher has stopped: no subscription starts after that.
  var noticesStopped = false
  /// Pings sent to this coordinator itself since one last came back, and when the first of them
  /// was sent, with those waiting for none to be unanswered (a signal for tests).
  var unansweredPings = 0
  var unansweredPingsSince: Int64?
  var pingWaiters = CountWaiters()
  /// Where the next sweep goes on (nil: from the start of time), and how many sweeps have ended,
  /// with those waiting for a number (a signal for tests).
  var sweepResume: SweepPosition?
  var sweepsDone = 0
  var sweepWaiters = CountWaiters()
  var dueNoticesReceived = 0
  var dueNoticeWaiters = CountWaiters()
  /// Whether a ``keepPartitionsPass()`` is in flight, and the passes waiting for it to end.
  var partitionPassInFlight = false
  var partitionPassWaiters: [CheckedContinuation<Void, Never>] = []
  /// Blobs of recent grants, by digest; emptied when it would pass ``blobCacheBytes`` (binaries
  /// may be up to 4 MiB each) or 1,024 entries.
  private var blobCache: [BlobDigest: [UInt8]] = [:]
  private var blobCacheSize = 0
  /// The most bytes of binaries ``blobCache`` holds.
  static let blobCacheBytes = 64 << 20
  /// Dispatch records the loader read ahead for the runs it queued, by task: what a lease needs
  /// (operator, arguments, blob, timeout, schedule), none of which changes after insert, so the
  /// batch that leases the run need not read its task again. Taken when the run leaves the
  /// queue; a record read for another run of the task is not used. The lease's compare-and-set
  /// in the store still refuses a run whose task was deleted or moved on since.
  var prefetched: [TaskID: (scheduledMicros: Int64, record: TaskRecord)] = [:]
  let wake = WakeSignal()
  /// Messages for executors' streams, by session, handed to ``writeOutgoing()``, so the
  /// dispatch loop starts its next lease transaction while the grants of the last one are being
  /// written. Each session's messages are written in order (a cancel never overtakes its run's
  /// grant), and sessions independently of each other.
  private let outbox: AsyncStream<OutboxEvent>
  private let outboxInput: AsyncStream<OutboxEvent>.Continuation
  /// One batch for ``writeOutgoing()``: each session's stream with the runs and messages for it.
  typealias OutgoingBatch = [UInt64: (Session, [Outgoing])]

  /// What ``writeOutgoing()`` is told.
  enum OutboxEvent: Sendable {
    /// Messages to write.
    case batch(OutgoingBatch)
    /// A session's stream has ended: its writer stops once what it was given is written (or
    /// has failed).
    case ended(UInt64)
  }

  /// One message for an executor's stream, about one run.
  struct Outgoing: Sendable {
    var runID: RunID
    var message: Hourglass_V1_CoordinatorMessage
    /// For a grant: the session it goes to, the lease's fence, and when the lease runs out in
    /// the store (the grant's `lease_duration` is what is left of it when the grant is written,
    /// since the executor counts it from receipt). Nil for a cancel.
    var grant: (session: UInt64, fence: Fence, expiresAt: Int64)? = nil
  }
  private var nextSession: UInt64 = 0
  /// Runs offered from outside the actor (``offer(_:then:)``) and not yet enqueued, with what
  /// to do after; `draining` while a task is taking them.
  private nonisolated let arrivals = Mutex<(entries: [(DueEntry, @Sendable () -> Void)], draining: Bool)>(([], false))
  /// Counters for metrics and tests.
  private(set) var dispatched = 0
  /// Per-executor gauges, by executor name, with the number of its streams.
  private var executorGauges: [String: (gauges: CoordinatorMetrics.ExecutorGauges, streams: Int)] = [:]
  /// Results recorded (fence matched) since start.
  private(set) var recorded = 0
  private var recordedWaiters = CountWaiters()
  private var dispatchedWaiters = CountWaiters()
  private var connectedWaiters = CountWaiters()

  init(store: any TaskStore, clock: any CoordinatorClock, configuration: CoordinatorConfiguration, logger: Logger, metrics: CoordinatorMetrics) {
    self.store = store
    self.clock = clock
    self.configuration = configuration
    self.logger = logger
    self.metrics = metrics
    self.cluster = store as? any PartitionLeasing
    if cluster != nil { ownership = PartitionFence(owner: configuration.coordinatorID, epochs: [:]) }
    (outbox, outboxInput) = AsyncStream.makeStream()
  }

  // MARK: Inputs

  /// A run that became due or will: queued when it falls inside the loaded window (later ones
  /// are loaded from the store when their time approaches).
  /// In a cluster, a run of a partition another coordinator owns is announced to it instead.
  func enqueue(taskID: TaskID, scheduledMicros: Int64, dueMicros: Int64, priority: Int32) {
    guard owns(taskID) else {
      announceDue(DueEntry(taskID: taskID, scheduledMicros: scheduledMicros, dueMicros: dueMicros, priority: priority))
      return
    }
    guard dueMicros < loadedUntil else { return }
    if queue.push(.init(taskID: taskID, scheduledMicros: scheduledMicros, dueMicros: dueMicros, priority: priority)) {
      publishQueue()
      poke()
    }
  }

  /// ``enqueue(taskID:scheduledMicros:dueMicros:priority:)`` from outside the actor without
  /// waiting for it: `then` runs once the run is enqueued. Runs offered together are enqueued
  /// by one task, in order, instead of one actor hop each (the Schedule handler answers on an
  /// event loop and offers every new task's first run here).
  nonisolated func offer(_ entry: DueEntry, then: @escaping @Sendable () -> Void) {
    let startDrain: Bool = arrivals.withLock { arrivals in
      arrivals.entries.append((entry, then))
      if arrivals.draining { return false }
      arrivals.draining = true
      return true
    }
    // High priority: a run offered before something else reaches the actor (a test's clock
    // advance, a tick) is enqueued before it.
    if startDrain { Task(priority: .high) { await self.takeArrivals() } }
  }

  private func takeArrivals() {
    while true {
      let batch = arrivals.withLock { arrivals in
        let batch = arrivals.entries
        arrivals.entries.removeAll(keepingCapacity: true)
        if batch.isEmpty { arrivals.draining = false }
        return batch
      }
      if batch.isEmpty { return }
      for (entry, _) in batch {
        enqueue(taskID: entry.taskID, scheduledMicros: entry.scheduledMicros, dueMicros: entry.dueMicros, priority: entry.priority)
      }
      for (_, then) in batch { then() }
    }
  }

  /// A task was deleted: drop its queued run; cancel its running ones on their executors if
  /// asked (in a cluster, through whichever coordinator granted each lease).
  func forget(taskID: TaskID, cancelling runIDs: [RunID], reason: String) async {
    queue.remove(taskID)
    prefetched[taskID] = nil
    publishQueue()
    for runID in runIDs {
      if leases[runID] == nil, cluster != nil {
        // Another coordinator's lease, or one of this coordinator's batches not yet recorded.
        cancelledUnseen[runID] = clock.nowMicros()
        announce(.cancel(runID, reason: reason))
        continue
      }
      await cancel(runID, reason: reason)
    }
  }

  /// Tells the executor holding this coordinator's lease on `runID` to stop it (after any grant
  /// still being written to its stream).
  func cancel(_ runID: RunID, reason: String) async {
    if unsentGrants.contains(runID), leases.removeValue(forKey: runID) != nil {
      // Its grant is in the batch being built and not handed to the outbox yet: it is dropped
      // there (``dispatchReady()``), so the executor never hears of the run.
      return
    }
    guard let lease = leases.removeValue(forKey: runID) else {
      // Perhaps leased by a batch whose transaction committed just before the delete did, and
      // whose grant is not out yet: that grant must never go out (``dispatchReady()``).
      cancelledUnseen[runID] = clock.nowMicros()
      return
    }
    guard let session = sessions[lease.session] else { return }
    var cancel = Hourglass_V1_CancelRun()
    cancel.runID = runID.description
    cancel.fence = lease.fence.rawValue
    cancel.reason = reason
    var message = Hourglass_V1_CoordinatorMessage()
    message.cancel = cancel
    outboxInput.yield(.batch([lease.session: (session, [Outgoing(runID: runID, message: message)])]))
  }

  /// An executor stream registered.
  func addExecutor(
    executorID: String, operators: Set<String>, slots: Int, batches: Bool = false,
    send: @escaping @Sendable (Hourglass_V1_CoordinatorMessage) async throws -> Void
  ) -> UInt64 {
    nextSession += 1
    let unwritten = UnwrittenGrants()
    sessions[nextSession] = Session(executorID: executorID, batches: batches, slots: slots, unwritten: unwritten, send: send)
    pool.add(session: nextSession, executorID: executorID, operators: operators, slots: slots, unwritten: unwritten)
    var entry = executorGauges[executorID] ?? (gauges: metrics.executorGauges(executorID), streams: 0)
    entry.streams += 1
    entry.gauges.freeSlots.record(0)
    executorGauges[executorID] = entry
    metrics.executorsConnected.record(sessions.count)
    connectedWaiters.resume(for: sessions.count)
    if cluster != nil && !joinedCluster { ownershipWake.signal() }
    logger.info(
      "executor connected", metadata: ["hourglass.executor": "\(executorID)", "hourglass.slots": "\(slots)", "hourglass.operators": "\(operators.sorted())"])
    return nextSession
  }

  /// An executor stream ended; its leases run out in the store and are recovered from there.
  func removeExecutor(session: UInt64) {
    if let gone = sessions.removeValue(forKey: session) {
      logger.info("executor disconnected", metadata: ["hourglass.executor": "\(gone.executorID)"])
      if var entry = executorGauges[gone.executorID] {
        entry.streams -= 1
        if entry.streams <= 0 {
          entry.gauges.destroy()
          executorGauges[gone.executorID] = nil
        } else {
          executorGauges[gone.executorID] = entry
        }
      }
    }
    pool.remove(session: session)
    outboxInput.yield(.ended(session))
    metrics.executorsConnected.record(sessions.count)
    publishRefused()
    leases = leases.filter { $0.value.session != session }
  }

  /// The executor granted credits.
  func grant(session: UInt64, credits: Int) {
    pool.grant(session: session, count: credits)
    publishFreeSlots(session)
    poke()
  }

  /// The executor asks for up to `credits` of its unused credits back (it moves the slots to
  /// another coordinator); answers how many it gets. Credits already taken for leases not yet
  /// sent are not among them; the answer may reach the executor before those leases, and the
  /// counts agree in either order (docs/protocol.md, "Credit withdrawal").
  func withdraw(session: UInt64, credits: Int) -> Int {
    let withdrawn = pool.withdraw(session: session, count: credits)
    publishFreeSlots(session)
    return withdrawn
  }

  /// An executor's heartbeat: records its measured clock skew (outside the bound it gets no
  /// leases) and returns whether it is eligible, with the cluster's coordinators to announce.
  func heartbeat(session: UInt64, skewMicros: Int64) -> (eligible: Bool, peers: [CoordinatorMember]?) {
    (setSkew(session: session, skewMicros: skewMicros), clusterPeers)
  }

  /// The executor's measured clock skew; outside the bound it gets no leases. Its first
  /// measurement makes it eligible for leases, if inside.
  private func setSkew(session: UInt64, skewMicros: Int64) -> Bool {
    guard let member = pool.members[session] else { return false }
    let eligible = abs(skewMicros) <= configuration.skewBoundMicros
    let first = member.skewMicros == nil
    // Before its first measurement an executor counts as inside, for the messages and the
    // refusal count: it is refused only once it is measured outside.
    let was = first || member.eligible
    pool.setEligible(session: session, eligible, skewMicros: skewMicros)
    if let id = sessions[session]?.executorID, let gauges = executorGauges[id]?.gauges {
      gauges.skewSeconds.record(Double(skewMicros) / 1_000_000)
      if was && !eligible { gauges.skewRefusals.increment() }
    }
    if was != eligible { publishRefused() }
    // Its first measurement, inside: leases may go to it now.
    if first && eligible { poke() }
    if was != eligible, let id = sessions[session]?.executorID {
      if eligible {
        logger.info("executor back inside the clock-skew bound", metadata: ["hourglass.executor": "\(id)", "hourglass.skew_us": "\(skewMicros)"])
        poke()
      } else {
        logger.warning(
          "executor outside the clock-skew bound: no leases until it is back",
          metadata: ["hourglass.executor": "\(id)", "hourglass.skew_us": "\(skewMicros)", "hourglass.bound_us": "\(configuration.skewBoundMicros)"])
      }
    }
    return eligible
  }

  /// The executor is draining.
  func drain(session: UInt64) {
    pool.setDraining(session: session)
  }

  /// What the dispatcher knows of a lease it granted with `fence`, if it is still active here.
  func activeLease(_ runID: RunID, fence: Fence) -> ActiveLease? {
    guard let lease = leases[runID], lease.fence == fence else { return nil }
    return lease
  }

  /// What the dispatcher knows of each of these leases (as ``activeLease(_:fence:)``), in one
  /// call.
  func activeLeases(_ keys: [(RunID, Fence)]) -> [ActiveLease?] {
    keys.map { activeLease($0.0, fence: $0.1) }
  }

  /// The lease of `runID` with `fence` ended (result recorded, refused, or renewal refused).
  /// Only that lease: a late message of an earlier attempt leaves the current one alone, so a
  /// cancel still finds it.
  func leaseEnded(_ runID: RunID, fence: Fence, recorded: Bool = false) {
    if leases[runID]?.fence == fence { leases[runID] = nil }
    if recorded {
      self.recorded += 1
      wakeRecordedWaiters()
    }
  }

  /// Several leases ended (results recorded or refused), and the runs their tasks go on with.
  func resultsHandled(_ ended: [(RunID, Fence, Bool)], enqueue entries: [DueQueue.Entry]) {
    var count = 0
    for (runID, fence, recorded) in ended {
      if leases[runID]?.fence == fence { leases[runID] = nil }
      if recorded { count += 1 }
    }
    for entry in entries {
      enqueue(taskID: entry.taskID, scheduledMicros: entry.scheduledMicros, dueMicros: entry.dueMicros, priority: entry.priority)
    }
    if count > 0 {
      recorded += count
      wakeRecordedWaiters()
    }
  }

  private func wakeRecordedWaiters() {
    recordedWaiters.resume(for: recorded)
  }

  /// Returns once at least `count` results have been recorded since start (a signal for tests).
  func waitUntilRecorded(_ count: Int) async {
    if recorded >= count { return }
    await withCheckedContinuation { recordedWaiters.add(until: { $0 >= count }, $0) }
  }

  /// Returns once at least `count` executor streams are registered at the same time (a signal
  /// for tests).
  func waitUntilExecutorsConnected(_ count: Int) async {
    if sessions.count >= count { return }
    await withCheckedContinuation { connectedWaiters.add(until: { $0 >= count }, $0) }
  }

  /// Returns once at least `count` runs have been dispatched since start, their leases held by
  /// this dispatcher (a signal for tests: a cancel from then on finds the lease).
  func waitUntilDispatched(_ count: Int) async {
    if dispatched >= count { return }
    await withCheckedContinuation { dispatchedWaiters.add(until: { $0 >= count }, $0) }
  }

  /// Runs queued (waiting and ready), for metrics and tests.
  var queuedCount: Int { queue.count }

  /// Free executor slots, for metrics.
  var freeCredits: Int { pool.totalCredits }

  private func poke() {
    wake.signal()
  }

  // MARK: Metrics

  /// Queued and overdue runs. Called whenever the queue changes, before any lease that follows
  /// from the change is sent, so a test that received the lease sees the gauges that led to it.
  func publishQueue() {
    metrics.runsQueued.record(queue.count)
    metrics.runsOverdue.record(queue.readyCount)
  }

  private func publishFreeSlots(_ session: UInt64) {
    guard let member = pool.members[session] else { return }
    executorGauges[member.executorID]?.gauges.freeSlots.record(member.credits)
  }

  private func publishRefused() {
    metrics.executorsSkewRefused.record(pool.members.values.filter { $0.skewMicros != nil && !$0.eligible }.count)
  }

  // MARK: The loop

  /// Runs until cancelled: loads ahead, recovers expired leases, dispatches due runs.
  ///
  /// Loading ahead runs beside the dispatch loop, not in it: reading the next window (thousands
  /// of entries at high rates) must not hold up the runs due meanwhile. The loader keeps fifteen
  /// sixteenths of the load-ahead window loaded (``loaderPassesPerWindow``); the dispatch loop loads by
  /// itself only when less than half is (the loader fell behind, or the clock jumped).
  func run() async throws {
    if cluster == nil {
      metrics.ownShards(partitions: Int(store.partitionCount), owner: configuration.coordinatorID)
    }
    do {
      try await loadBacklog()
    } catch {
      if Task.isCancelled {
        // Stopped while starting: a coordinator that has joined the cluster still leaves it.
        if joinedCluster { await leaveWithinTimeLimit() }
        return
      }
      logger.error("loading the backlog failed; continuing with what is due from now", metadata: ["hourglass.error": "\(error)"])
    }
    await withTaskGroup(of: Void.self) { group in
      group.addTask { await self.loadAhead() }
      group.addTask { await self.recoverLoop() }
      group.addTask { await self.writeOutgoing() }
      // On one coordinator too: a run whose load or recovery failed goes out within a sweep.
      group.addTask { await self.sweepRecentEntries() }
      if cluster != nil {
        group.addTask { await self.listenForNotices() }
        group.addTask { await self.publishNotices() }
      }
      await withTaskGroup(of: Void.self) { dispatching in
        if cluster != nil {
          // Partitions are given up (and the cluster told) only after the dispatch loop stops.
          dispatching.addTask { await self.keepPartitions() }
        }
        await dispatchLoop()
        dispatching.cancelAll()
      }
      group.cancelAll()
    }
    endExecutorStreams()
  }

  /// Dispatching has stopped: tells every executor stream (`ShuttingDown`), so that each
  /// executor half-closes it once what it sent is answered, and the stream ends well within
  /// the listener's drain instead of at its timeout. Results already in flight are still
  /// recorded and acknowledged: the stream's handler reads until the executor's half-close.
  ///
  /// Not waited for: a stream whose executor reads nothing (its credit used up) would hold the
  /// shutdown; the listener's drain bounds how long such a stream lasts.
  private func endExecutorStreams() {
    let streams = sessions.values.map(\.send)
    guard !streams.isEmpty else { return }
    logger.info("asking the executors to end their streams", metadata: ["hourglass.streams": "\(streams.count)"])
    let message = Hourglass_V1_CoordinatorMessage.with { $0.shuttingDown = Hourglass_V1_ShuttingDown() }
    // A task of its own: the dispatcher's is cancelled by now, and writes could refuse.
    Task {
      await withTaskGroup(of: Void.self) { group in
        for send in streams {
          // A stream that is already gone has nothing to end.
          group.addTask { try? await send(message) }
        }
      }
    }
  }

  /// Every `recoveryInterval`, until cancelled: expired leases go back to the queue. Beside the
  /// dispatch loop, not in it: recovery is a write transaction, and on a single-writer store it
  /// waits for the commit in progress; the runs due meanwhile must not wait with it.
  private func recoverLoop() async {
    while !Task.isCancelled {
      await recoverExpiredLeases(now: clock.nowMicros())
      do { try await clock.sleep(untilMicros: clock.nowMicros() + configuration.recoveryIntervalMicros) } catch { return }
    }
  }

  /// Each loader pass reads (and reads ahead the records of) this fraction of the load-ahead
  /// window, 1/16: the loader tops the window up whenever less than 15/16 of it is loaded.
  /// Passes of a quarter read 1 s of runs at once in the dispatch benchmark (5,000 runs and their
  /// records), a burst of CPU that showed as late runs right after each pass; small passes spread
  /// the same reads out.
  static let loaderPassesPerWindow: Int64 = 16

  /// The part of the window that is kept loaded, in microseconds.
  private var keptLoadedMicros: Int64 { configuration.loadAheadMicros - configuration.loadAheadMicros / Self.loaderPassesPerWindow }

  /// Keeps the due queue filled for the coming window, until cancelled.
  private func loadAhead() async {
    while !Task.isCancelled {
      let now = clock.nowMicros()
      if now + keptLoadedMicros >= loadedUntil, now >= loadRetryMicros {
        do {
          try await load(until: now + configuration.loadAheadMicros)
        } catch {
          if Task.isCancelled { return }
          // The store is unavailable: keep what is queued, and read the window again later.
          logger.error("loading due runs failed; retrying in 1 s", metadata: ["hourglass.error": "\(error)"])
        }
      }
      let next = max(loadedUntil - keptLoadedMicros, clock.nowMicros() + 1_000, loadRetryMicros)
      do { try await clock.sleep(untilMicros: next) } catch { return }
    }
  }

  /// Reads the owned partitions' entries that are due (up to a second ago) and still waiting,
  /// until cancelled: a run that is due and in no queue goes out at most a sweep interval (and a
  /// second, ``sweepLagMicros``) late. On one coordinator, such a run's load or recovery
  /// failed; in a cluster, also, another
  /// coordinator's notice of it was lost (or arrived for an instant already loaded here while
  /// the sender's clock lagged). A due entry is in the index only until it is leased, so a
  /// sweep reads what still waits, not every run of the interval.
  func sweepRecentEntries() async {
    let interval = configuration.clusterSweepMicros
    while !Task.isCancelled {
      do { try await clock.sleep(untilMicros: clock.nowMicros() + interval) } catch { return }
      let now = clock.nowMicros()
      let partitions = ownedPartitions
      guard !partitions.isEmpty else { continue }
      do {
        try await sweep(partitions: partitions, until: min(now - Self.sweepLagMicros, loadedUntil))
      } catch {
        if Task.isCancelled { return }
        logger.warning("the sweep of due entries failed", metadata: ["hourglass.error": "\(error)"])
      }
      sweepsDone += 1
      sweepWaiters.resume(for: sweepsDone)
    }
  }

  /// Where a sweep stopped when it had read ``CoordinatorConfiguration/sweepLimit`` entries: in
  /// `bucket`, the partitions before `partition` are done, and `partition` goes on after `after`.
  struct SweepPosition: Sendable, Hashable {
    var bucket: HourBucket
    var partition: Partition
    var after: DueCursor?
  }

  /// One sweep: the owned partitions' entries due before `until`, from the start of time (a run
  /// scheduled already overdue, whose notice was lost, is as much due and waiting as one that fell
  /// due lately). It goes on from where the last sweep stopped, and stops after
  /// ``CoordinatorConfiguration/sweepLimit`` entries; the sweep that reaches `until` makes the
  /// next one start over.
  func sweep(partitions: [Partition], until: Int64) async throws {
    var resume = sweepResume
    if let position = resume, position.bucket.startMicros >= until { resume = nil }
    let (queued, stopped) = try await loadHoursHoldingEntries(
      partitions: partitions, from: Self.backlogStartMicros, until: until, resume: resume, budget: configuration.sweepLimit)
    sweepResume = stopped
    if queued > 0 { publishQueue() }
  }

  /// Loads the entries of `partitions` due in `[from, until)`, hour by hour, reading only the
  /// hours that hold entries (``TaskStore/firstDueBucket(partition:atOrAfter:)``): each
  /// partition's next such hour is probed once, and again only after that hour of it was read,
  /// so a sparse backlog costs a probe per hour read, not one per partition and hour. Starts at
  /// `resume` when given, and stops after reading `budget` entries; returns how many were queued
  /// and, when the budget stopped it, where to go on.
  private func loadHoursHoldingEntries(
    partitions: [Partition], from: Int64, until: Int64, resume: SweepPosition?, budget: Int
  ) async throws -> (queued: Int, stoppedAt: SweepPosition?) {
    var resume = resume
    var budget = budget
    var queued = 0
    let start = resume?.bucket ?? HourBucket(containing: from)
    var nextBucket: [Partition: HourBucket] = [:]
    for partition in partitions {
      if let found = try await store.firstDueBucket(partition: partition, atOrAfter: start), found.startMicros < until {
        nextBucket[partition] = found
      }
    }
    while let current = nextBucket.values.min() {
      if current != resume?.bucket { resume = nil }
      for partition in partitions where nextBucket[partition] == current {
        // In the hour a sweep stopped in, the partitions before its own were read by it.
        if resume.map({ partition >= $0.partition }) ?? true {
          let after = resume?.partition == partition ? resume?.after : nil
          let outcome = try await load(ShardID(partition: partition, bucket: current), from: from, until: until, after: after, budget: budget)
          queued += outcome.queued
          budget -= outcome.read
          if let stopped = outcome.stoppedAfter { return (queued, SweepPosition(bucket: current, partition: partition, after: stopped)) }
        }
        if let found = try await store.firstDueBucket(partition: partition, atOrAfter: current.next), found.startMicros < until {
          nextBucket[partition] = found
        } else {
          nextBucket[partition] = nil
        }
      }
      resume = nil
    }
    return (queued, nil)
  }

  /// Returns once `count` sweeps have ended (a signal for tests).
  func waitUntilSwept(times count: Int) async {
    if sweepsDone >= count { return }
    await withCheckedContinuation { sweepWaiters.add(until: { $0 >= count }, $0) }
  }

  /// What fell due in the last second is left to the dispatch loop, which is leasing it: read
  /// by a sweep, a run could be queued again after its lease committed (and be refused by the
  /// store at its second lease, for nothing).
  static let sweepLagMicros: Int64 = 1_000_000

  private func dispatchLoop() async {
    while !Task.isCancelled {
      let now = clock.nowMicros()
      if now + configuration.loadAheadMicros / 2 >= loadedUntil, now >= loadRetryMicros {
        do {
          try await load(until: now + configuration.loadAheadMicros)
        } catch {
          if Task.isCancelled { return }
          logger.error("loading due runs failed; retrying", metadata: ["hourglass.error": "\(error)"])
        }
      }
      // Runs due within the lease-ahead go out now; their grants say when to start.
      queue.promote(now: clock.nowMicros() + configuration.leaseAheadMicros)
      publishQueue()
      let sent = await dispatchReady()
      // Sleep until the next run is due, the window needs loading, or something changes (new
      // run, credits).
      var wakeAt = max(loadedUntil - configuration.loadAheadMicros / 2, loadRetryMicros)
      // With a lease-ahead, wake when the next run is half of it away: each pass then leases
      // what comes due over half the lease-ahead, in one transaction, still ahead of its time.
      if queue.readyCount == 0, let next = queue.nextDueMicros { wakeAt = min(wakeAt, next - configuration.leaseAheadMicros / 2) }
      if sent > 0, queue.readyCount > 0, pool.totalCredits > 0 { continue }
      await sleep(untilMicros: wakeAt)
    }
  }

  /// Sleeps until `deadline` or the next signal of `wake` (the dispatcher's own by default).
  func sleep(untilMicros deadline: Int64, orSignal wake: WakeSignal? = nil) async {
    if deadline <= clock.nowMicros() { return }
    let clock = self.clock
    let wake = wake ?? self.wake
    await withTaskGroup(of: Void.self) { group in
      group.addTask { try? await clock.sleep(untilMicros: deadline) }
      group.addTask { await wake.wait() }
      _ = await group.next()
      group.cancelAll()
    }
  }

  /// The earliest due time a load looks from when it must find everything overdue: read only
  /// where the store holds entries (``TaskStore/firstDueBucket(partition:atOrAfter:)``), so a
  /// downtime of any length is caught up at the cost of one index probe per non-empty hour.
  static let backlogStartMicros: Int64 = 0

  /// At start-up: everything overdue from before (downtime), however long ago it came due; the
  /// misfire policy of each recurring task decides what of it runs (``misfireMove(of:stored:entry:now:)``).
  private func loadBacklog() async throws {
    let now = clock.nowMicros()
    loadedUntil = Self.backlogStartMicros
    try await load(until: now + configuration.loadAheadMicros)
  }

  /// Loads due entries in `[loadedUntil, until)` from every owned partition's hour buckets.
  private func load(until: Int64) async throws {
    guard until > loadedUntil else { return }
    let from = loadedUntil == .min ? clock.nowMicros() : loadedUntil
    // Widen the window before reading: a task scheduled while the reads are in flight is then
    // queued by the Schedule RPC itself (the queue drops the duplicate if the read saw it too).
    loadedUntil = until
    do {
      try await load(partitions: ownedPartitions, from: from, until: until)
    } catch {
      // Nothing of the window may be skipped: the next load reads it again from its start (what
      // this one queued, and what Schedule queued meanwhile, the queue drops as duplicates).
      loadedUntil = min(loadedUntil, from)
      loadRetryMicros = clock.nowMicros() + Self.loadRetryDelayMicros
      throw error
    }
  }

  /// Loads the due entries of `partitions` in `[from, until)` (those still owned when read).
  /// A span of more than a few hours (a backlog) is read only where it holds entries.
  func load(partitions: [Partition], from: Int64, until: Int64) async throws {
    guard from < until else { return }
    var loaded = 0
    let first = HourBucket(containing: from)
    if HourBucket(containing: until - 1).rawValue - first.rawValue > 2 {
      loaded = try await loadHoursHoldingEntries(partitions: partitions, from: from, until: until, resume: nil, budget: .max).queued
    } else {
      var bucket = first
      while bucket.startMicros < until {
        for partition in partitions { loaded += try await load(ShardID(partition: partition, bucket: bucket), from: from, until: until).queued }
        bucket = bucket.next
      }
    }
    if loaded > 0 {
      publishQueue()
      logger.debug("loaded due runs", metadata: ["hourglass.count": "\(loaded)", "hourglass.until": "\(until)"])
    }
  }

  /// Loads `shard`'s due entries in `[from, until)` after `start`, page by page, reading at most
  /// `budget` (more than 0); returns how many were read and queued, and the last entry read when
  /// the budget stopped it before the end.
  private func load(
    _ shard: ShardID, from: Int64, until: Int64, after start: DueCursor? = nil, budget: Int = .max
  ) async throws -> (queued: Int, read: Int, stoppedAfter: DueCursor?) {
    let lower = max(from, shard.bucket.startMicros)
    let upper = min(until, shard.bucket.endMicros)
    guard lower < upper else { return (0, 0, nil) }
    var loaded = 0
    var read = 0
    var after = start
    while true {
      let page = min(configuration.loadBatch, budget - read)
      let entries = try await store.loadDue(shard: shard, from: lower, until: upper, after: after, limit: page)
      read += entries.count
      var added: [DueQueue.Entry] = []
      // A partition given up while this read was in flight is not queued; nor a run being
      // leased, or leased, since the read began.
      for entry in entries where owns(entry.taskID) && !leasing.contains(entry.taskID) && leases[entry.runID] == nil {
        let queued = DueQueue.Entry(taskID: entry.taskID, scheduledMicros: entry.scheduledMicros, dueMicros: entry.dueMicros, priority: entry.priority)
        if queue.push(queued) { added.append(queued) }
      }
      if !added.isEmpty {
        loaded += added.count
        // The dispatch loop may be asleep until a later instant than these.
        poke()
        await prefetch(added)
      }
      guard entries.count == page, let last = entries.last else { return (loaded, read, nil) }
      // (due time, id), not the due time alone: any number of entries may share an instant.
      after = last.cursor
      if read >= budget { return (loaded, read, after) }
    }
  }

  /// The most dispatch records held ahead (a few hundred bytes each); runs loaded beyond that,
  /// and runs already due when loaded, have theirs read when they are leased.
  static let prefetchLimit = 65_536

  /// Reads the dispatch records of runs just loaded, ahead of their due time, so that leasing
  /// them does not wait for that read. A failed read only means the dispatch path reads them.
  private func prefetch(_ loaded: [DueQueue.Entry]) async {
    let now = clock.nowMicros()
    let entries = Array(loaded.lazy.filter { $0.dueMicros > now }.prefix(max(0, Self.prefetchLimit - prefetched.count)))
    if entries.isEmpty { return }
    let records: [TaskID: TaskRecord]
    do {
      records = try await store.dispatchRecords(taskIDs: entries.map(\.taskID))
    } catch {
      logger.debug("reading dispatch records ahead failed; they are read when due", metadata: ["hourglass.error": "\(error)"])
      return
    }
    for entry in entries where queue.isQueued(entry) {
      if let record = records[entry.taskID] { holdAhead(record, for: entry) }
    }
  }

  /// Keeps `record` for the lease of `entry`'s run, up to ``prefetchLimit`` records. A record
  /// whose arguments are large (up to 4 MiB) is read again when its run is leased instead, so
  /// the records held stay within a few hundred bytes each.
  private func holdAhead(_ record: TaskRecord, for entry: DueQueue.Entry) {
    guard prefetched.count < Self.prefetchLimit, record.arguments.reduce(0, { $0 + $1.utf8.count }) <= 1024 else { return }
    prefetched[entry.taskID] = (entry.scheduledMicros, record)
  }

  private func recoverExpiredLeases(now: Int64) async {
    if !cancelledUnseen.isEmpty {
      let horizon = now - configuration.leaseDurationMicros
      cancelledUnseen = cancelledUnseen.filter { $0.value > horizon }
    }
    do {
      let recovered: [RunRecord]
      let started = ContinuousClock.now
      if let cluster, let ownership {
        recovered = try await cluster.recoverExpiredLeases(
          now: now, skewBound: configuration.skewBoundMicros, limit: 10_000, partitions: ownership.epochs.keys.sorted())
      } else {
        recovered = try await store.recoverExpiredLeases(now: now, skewBound: configuration.skewBoundMicros, limit: 10_000)
      }
      metrics.storeWrite(.recover, since: started)
      if recovered.isEmpty { return }
      for run in recovered {
        leases[run.id] = nil
        metrics.leasesExpired.increment()
        if run.state != .leased {
          logger.debug("lease expired: run goes out again", metadata: ["hourglass.run_id": "\(run.id)", "hourglass.executor": "\(run.leaseOwner ?? "-")"])
        }
      }
      // One read for all of them (an executor that died held up to its slot count); the
      // records are kept for the leases that follow, which then read nothing.
      let records: [TaskID: TaskRecord]?
      do {
        records = try await store.dispatchRecords(taskIDs: recovered.map(\.id.taskID))
      } catch {
        // The recovery is committed: its runs are pending, due now, and behind the loaded
        // window, so they must be queued here all the same (at the default priority; leasing
        // them reads their tasks). Runs on their last attempt are still leased: the next pass
        // finds them again.
        logger.warning("reading the tasks of recovered runs failed; queuing them without", metadata: ["hourglass.error": "\(error)"])
        records = nil
      }
      let exhausted = recovered.filter { $0.state == .leased }
      if let records, !exhausted.isEmpty { await recordExhausted(exhausted, tasks: records, now: now) }
      for run in recovered where run.state != .leased {
        let task = records?[run.id.taskID]
        if records != nil && task == nil { continue }  // Deleted meanwhile.
        let entry = DueQueue.Entry(taskID: run.id.taskID, scheduledMicros: run.id.scheduledMicros, dueMicros: now, priority: task?.priority ?? 0)
        if queue.push(entry), let task { holdAhead(task, for: entry) }
      }
      publishQueue()
      poke()
    } catch {
      logger.error("lease recovery failed", metadata: ["hourglass.error": "\(error)"])
    }
  }

  /// Runs whose lease ran out on their task's last allowed attempt (the executor died, or was cut
  /// off, every time): recorded dead with the fence they still hold, as a failed result of that
  /// attempt would be, so the task moves on to its next run or fails instead of going out
  /// forever. One that cannot be recorded now is found again by the next recovery pass.
  private func recordExhausted(_ runs: [RunRecord], tasks: [TaskID: TaskRecord], now: Int64) async {
    let planner = ResultPlanner(configuration: configuration)
    var items: [ResultRecord] = []
    var planned: [(run: RunRecord, task: TaskRecord, plan: ResultPlanner.Plan)] = []
    for run in runs {
      guard let task = tasks[run.id.taskID], let plan = try? planner.plan(task: task, runID: run.id, attempt: run.attempt, outcome: .failed, now: now)
      else { continue }
      let error = "the lease ran out without a result on attempt \(run.attempt) of \(task.maxAttempts) (executor \(run.leaseOwner ?? "-") lost or cut off)"
      items.append(ResultRecord(runID: run.id, fence: run.fence, result: RunResult(state: plan.state, finishedMicros: now, error: error, next: plan.next)))
      planned.append((run, task, plan))
    }
    guard !items.isEmpty else { return }
    let outcomes: [RecordOutcome]
    do {
      let started = ContinuousClock.now
      outcomes = try await store.recordResults(items)
      metrics.storeWrite(.result, since: started)
    } catch {
      logger.error("recording runs whose last lease ran out failed; retrying at the next pass", metadata: ["hourglass.error": "\(error)"])
      return
    }
    var count = 0
    for (entry, outcome) in zip(planned, outcomes) where outcome == .recorded {
      count += 1
      metrics.runsFailed.increment()
      if entry.plan.state == .dead { metrics.taskFailed(operatorName: entry.task.operatorName) }
      if entry.plan.skipped > 0 { metrics.runsSkipped.increment(by: Int64(entry.plan.skipped)) }
      logger.warning(
        "run dead: its lease ran out on its last allowed attempt",
        metadata: [
          "hourglass.run_id": "\(entry.run.id)", "hourglass.attempt": "\(entry.run.attempt)", "hourglass.executor": "\(entry.run.leaseOwner ?? "-")",
        ])
      if case .reschedule(let next) = entry.plan.next {
        enqueue(taskID: entry.task.id, scheduledMicros: next, dueMicros: next, priority: entry.task.priority)
      }
    }
    if count > 0 {
      recorded += count
      wakeRecordedWaiters()
    }
  }

  /// Sends ready runs while executors hold credits for them, in batches: one store read for
  /// the batch's tasks, one durable transaction for all of its leases, then the grants.
  @discardableResult
  private func dispatchReady() async -> Int {
    var sent = 0
    var parked: [DueQueue.Entry] = []
    defer {
      for entry in parked { queue.returnReady(entry) }
      leasing.removeAll(keepingCapacity: true)
      publishQueue()
    }
    while pool.totalCredits > 0 {
      var batch: [DueQueue.Entry] = []
      let room = min(pool.totalCredits, configuration.leaseBatch)
      while batch.count < room, let entry = queue.popReady() {
        batch.append(entry)
        leasing.insert(entry.taskID)
      }
      if batch.isEmpty { break }
      publishQueue()
      var records: [TaskID: TaskRecord] = [:]
      var unread: [TaskID] = []
      for entry in batch {
        if let ahead = prefetched.removeValue(forKey: entry.taskID), ahead.scheduledMicros == entry.scheduledMicros {
          records[entry.taskID] = ahead.record
        } else {
          unread.append(entry.taskID)
        }
      }
      do {
        if !unread.isEmpty {
          records.merge(try await store.dispatchRecords(taskIDs: unread)) { _, read in read }
        }
      } catch {
        logger.error("dispatch failed; retrying shortly", metadata: ["hourglass.count": "\(batch.count)", "hourglass.error": "\(error)"])
        parked += batch
        break
      }
      struct Pick {
        var entry: DueQueue.Entry
        var task: TaskRecord
        /// A recurring task's stored schedule and retry policy, decoded once for the checks below.
        var stored: StoredTaskSpec?
        var session: UInt64
        var executor: Session
      }
      var picks: [Pick] = []
      var misfires: [Misfire] = []
      let checkedAt = clock.nowMicros()
      for entry in batch {
        guard let task = records[entry.taskID], task.state == .active, task.nextRunMicros == entry.scheduledMicros else {
          continue  // deleted, finished, or moved on since it was queued
        }
        let stored = task.recurring ? try? StoredTaskSpec.decode(task.scheduleSpec) : nil
        if let move = misfireMove(of: task, stored: stored, entry: entry, now: checkedAt) {
          misfires.append(Misfire(entry: entry, task: task, move: move))
          continue
        }
        guard let session = pool.take(operatorName: task.operatorName, following: picks.last?.session) else {
          parked.append(entry)
          continue
        }
        publishFreeSlots(session)
        guard let executor = sessions[session] else { continue }
        picks.append(Pick(entry: entry, task: task, stored: stored, session: session, executor: executor))
      }
      if !misfires.isEmpty { parked += await apply(misfires) }
      if picks.isEmpty { continue }
      let now = clock.nowMicros()
      let overlaps = picks.map { overlapNext(of: $0.task, stored: $0.stored, after: $0.entry.scheduledMicros, now: now) }
      let requests = zip(picks, overlaps).map { pick, overlap in
        LeaseRequest(
          taskID: pick.entry.taskID, scheduledMicros: pick.entry.scheduledMicros, owner: pick.executor.executorID,
          expiresAt: now + configuration.leaseDurationMicros, advanceTo: overlap?.next)
      }
      let granted: [Lease?]
      var unheld: Set<Partition> = []
      do {
        let started = ContinuousClock.now
        if let cluster, let ownership {
          // Refused where this coordinator no longer holds the partition with its epoch.
          let fenced = try await cluster.createLeases(requests, now: now, fencedBy: ownership)
          granted = fenced.leases
          unheld = fenced.unheld
        } else {
          granted = try await store.createLeases(requests, now: now)
        }
        metrics.storeWrite(.lease, since: started)
      } catch {
        logger.error("creating leases failed; retrying shortly", metadata: ["hourglass.count": "\(picks.count)", "hourglass.error": "\(error)"])
        for pick in picks {
          pool.refund(session: pick.session)
          publishFreeSlots(pick.session)
          parked.append(pick.entry)
        }
        break
      }
      // The grants go out on each executor's stream in order, the streams side by side, so one
      // slow stream (waiting for message credit) does not hold up the others.
      var grants: OutgoingBatch = [:]
      for (index, ((pick, request), lease)) in zip(zip(picks, requests), granted).enumerated() {
        guard let lease else {
          pool.refund(session: pick.session)
          publishFreeSlots(pick.session)
          if !unheld.isEmpty && unheld.contains(pick.task.partition) {
            // Its partition lease ran out or moved: kept until the next ownership pass says
            // which (it renews and wakes this loop, or gives the partition up and drops it).
            parked.append(pick.entry)
          }
          continue
        }
        let detached = request.advanceTo != nil && lease.runID.scheduledMicros == request.scheduledMicros
        if detached, let next = request.advanceTo {
          // Overlap allowed: the next run is queued now, while this one runs.
          enqueue(taskID: pick.task.id, scheduledMicros: next, dueMicros: next, priority: pick.task.priority)
          if let skipped = overlaps[index]?.skipped, skipped > 0 { metrics.runsSkipped.increment(by: Int64(skipped)) }
        }
        // Known before any await below, so that a cancel from now on finds it.
        leases[lease.runID] = ActiveLease(session: pick.session, fence: lease.fence, task: pick.task, attempt: lease.attempt, detached: detached)
        unsentGrants.insert(lease.runID)
        let message = await grantMessage(lease, of: pick.task, dueMicros: pick.entry.dueMicros)
        // Cancelled (its task deleted) since its lease committed, before this coordinator knew
        // of it or during the read of its blob: the run never goes out. Not sent either when its
        // blob could not be read (the lease runs out and is recovered). Either way the executor
        // still counts the credit.
        let cancelled = cancelledUnseen.removeValue(forKey: lease.runID) != nil || leases[lease.runID]?.fence != lease.fence
        guard let message, !cancelled else {
          if leases[lease.runID]?.fence == lease.fence { leases[lease.runID] = nil }
          unsentGrants.remove(lease.runID)
          pool.refund(session: pick.session)
          publishFreeSlots(pick.session)
          continue
        }
        // Counted before the send, so whoever receives the lease sees it counted.
        metrics.runsDispatched.increment()
        metrics.dispatchLateness.recordMicroseconds(max(0, now - pick.entry.dueMicros))
        logger.debug(
          "lease granted",
          metadata: [
            "hourglass.run_id": "\(lease.runID)", "hourglass.executor": "\(pick.executor.executorID)", "hourglass.fence": "\(lease.fence.rawValue)",
            "hourglass.lateness_us": "\(now - pick.entry.dueMicros)",
          ])
        grants[pick.session, default: (pick.executor, [])].1.append(
          Outgoing(runID: lease.runID, message: message, grant: (pick.session, lease.fence, request.expiresAt)))
      }
      if !unheld.isEmpty { ownershipWake.signal() }
      // A grant whose run was cancelled while later ones of the batch were being built is
      // dropped (its cancel sent nothing): the executor never hears of the run.
      for (session, entry) in grants {
        let kept = entry.1.filter { leases[$0.runID]?.fence == $0.grant?.fence }
        guard kept.count < entry.1.count else { continue }
        for _ in kept.count..<entry.1.count { pool.refund(session: session) }
        publishFreeSlots(session)
        grants[session] = kept.isEmpty ? nil : (entry.0, kept)
      }
      unsentGrants.removeAll(keepingCapacity: true)
      // Written by `writeOutgoing()`; the next lease transaction need not wait for it.
      if !grants.isEmpty {
        for entry in grants.values { entry.0.unwritten.add(entry.1.count) }
        outboxInput.yield(.batch(grants))
      }
      let count = grants.values.reduce(0) { $0 + $1.1.count }
      dispatched += count
      dispatchedWaiters.resume(for: dispatched)
      sent += count
    }
    return sent
  }

  /// Writes what ``dispatchReady()`` and ``cancel(_:reason:)`` queued, until cancelled. Each
  /// session has a writer of its own, which writes its messages in order: one stream that stops
  /// taking messages (an executor that grants no message credit: stalled, or misbehaving) holds
  /// up only its own grants, never another executor's. It is sent no more grants once those
  /// waiting for it reach its slot count (``UnwrittenGrants``). The writer counts them down
  /// itself: it waits for the dispatcher only when a write failed, or when the stream can take
  /// runs again, never between two writes.
  private nonisolated func writeOutgoing() async {
    let clock = self.clock
    await withDiscardingTaskGroup { group in
      var writers: [UInt64: AsyncStream<[Outgoing]>.Continuation] = [:]
      for await event in outbox {
        switch event {
        case .batch(let batch):
          for (session, (executor, messages)) in batch {
            if let writer = writers[session] {
              writer.yield(messages)
              continue
            }
            let (queue, writer) = AsyncStream<[Outgoing]>.makeStream()
            writers[session] = writer
            writer.yield(messages)
            group.addTask {
              for await messages in queue {
                let failed = await Self.push(messages, to: executor, clock: clock)
                let grants = messages.count { $0.grant != nil }
                let before = executor.unwritten.add(-grants)
                if before >= executor.slots && before - grants < executor.slots { self.wake.signal() }
                if !failed.isEmpty { await self.notSent(failed) }
              }
            }
          }
        case .ended(let session):
          writers.removeValue(forKey: session)?.finish()
        }
      }
      for writer in writers.values { writer.finish() }
    }
  }

  /// Grants (or cancels) that could not be written to their stream.
  private func notSent(_ failed: [Outgoing]) {
    for item in failed {
      guard let grant = item.grant else { continue }
      // The executor never got it, so the credit it took is still the executor's to use (a
      // no-op if its stream is gone). The lease stays in the store and runs out; recovery sends
      // the run again. Forgotten here only if it is still this grant's (not a newer lease of
      // the run, granted since).
      pool.refund(session: grant.session)
      publishFreeSlots(grant.session)
      if leases[item.runID]?.fence == grant.fence { leases[item.runID] = nil }
      dispatched -= 1
      logger.info("could not push a lease; it will expire and be recovered", metadata: ["hourglass.run_id": "\(item.runID)"])
    }
  }

  /// Sends one executor its grants of a batch: as one `LeaseGrantBatch` when it takes them,
  /// else one message each, in order. Returns what could not be sent.
  ///
  /// Each grant's `lease_duration` is set, just before its message is written, to what is left
  /// of its lease then: the executor counts its lease from receipt, and the store's expiry (plus
  /// the skew bound) is when the run goes out again, so a grant that waited (a lease
  /// transaction, a stream without message credit) must not give the executor more time than
  /// the store does. A grant whose lease has run out meanwhile is not sent.
  private static func push(_ outgoing: [Outgoing], to executor: Session, clock: any CoordinatorClock) async -> [Outgoing] {
    var failed: [Outgoing] = []
    /// The items' messages with their leases' time left now; those already run out go to `failed`.
    func prepared(_ items: ArraySlice<Outgoing>) -> [(Outgoing, Hourglass_V1_CoordinatorMessage)] {
      let now = clock.nowMicros()
      var ready: [(Outgoing, Hourglass_V1_CoordinatorMessage)] = []
      for item in items {
        var message = item.message
        if let grant = item.grant {
          guard grant.expiresAt > now else {
            failed.append(item)
            continue
          }
          message.lease.leaseDuration = ProtoTime.duration(grant.expiresAt - now)
        }
        ready.append((item, message))
      }
      return ready
    }
    guard executor.batches && outgoing.count > 1 else {
      for index in outgoing.indices {
        for (item, message) in prepared(outgoing[index...index]) {
          do { try await executor.send(message) } catch { failed.append(item) }
        }
      }
      return failed
    }
    // Batches of at most `batchBytes` of blobs and arguments, far below any message-size limit.
    var start = outgoing.startIndex
    while start < outgoing.endIndex {
      var end = start
      var bytes = 0
      while end < outgoing.endIndex {
        let grant = outgoing[end].message.lease
        let size = 256 + grant.blob.count + grant.arguments.reduce(0) { $0 + $1.utf8.count }
        if end > start && bytes + size > batchBytes { break }
        bytes += size
        end += 1
      }
      let chunk = prepared(outgoing[start..<end])
      start = end
      guard var message = chunk.first?.1 else { continue }
      if chunk.count > 1 {
        message = Hourglass_V1_CoordinatorMessage()
        message.leases = Hourglass_V1_LeaseGrantBatch.with { $0.grants = chunk.map(\.1.lease) }
      }
      do { try await executor.send(message) } catch { failed += chunk.map(\.0) }
    }
    return failed
  }

  /// The most bytes of blobs and arguments in one `LeaseGrantBatch` (a quarter of the default
  /// message-size limit); a grant with a larger blob goes alone.
  static var batchBytes: Int { 1 << 20 }

  /// The `LeaseGrant` for a lease of a run due at `dueMicros`; nil (logged) if the task's blob
  /// cannot be read, in which case the lease runs out in the store and is recovered.
  private func grantMessage(_ lease: Lease, of task: TaskRecord, dueMicros: Int64) async -> Hourglass_V1_CoordinatorMessage? {
    var grant = Hourglass_V1_LeaseGrant()
    grant.runID = lease.runID.description
    grant.taskID = task.id.description
    grant.scheduledAt = ProtoTime.timestamp(lease.runID.scheduledMicros)
    grant.attempt = UInt32(clamping: lease.attempt)
    grant.fence = lease.fence.rawValue
    grant.leaseDuration = ProtoTime.duration(configuration.leaseDurationMicros)
    grant.operator = task.operatorName
    grant.arguments = task.arguments
    grant.timeout = ProtoTime.duration(task.timeoutMicros)
    // Leased ahead of its due time: the executor holds it until then.
    let early = dueMicros - clock.nowMicros()
    if early > 0 { grant.startAfter = ProtoTime.duration(early) }
    if let digest = task.blobDigest {
      do {
        grant.blob = Data(try await blob(digest))
        grant.blobSha256 = digest.hex
      } catch {
        logger.error(
          "could not read a task's blob; the lease will expire and be recovered",
          metadata: ["hourglass.run_id": "\(lease.runID)", "hourglass.error": "\(error)"])
        return nil
      }
    }
    var message = Hourglass_V1_CoordinatorMessage()
    message.lease = grant
    return message
  }

  /// What the misfire policy makes of a recurring task's run found more than its grace past due
  /// when it could go out (the coordinator was down, or no executor could take it): nil to lease
  /// it as it is; otherwise the task moves on to the run the policy starts instead (the latest
  /// due, for `run-once`), or to its next fire time (`skip`), or ends (`maxRuns`, `end`). Only a
  /// run's first attempt: a retry, or a run going out again after its lease ran out (due time
  /// not its scheduled time), started long ago.
  func misfireMove(of task: TaskRecord, stored: StoredTaskSpec?, entry: DueQueue.Entry, now: Int64) -> MisfireMove? {
    guard task.recurring, entry.dueMicros == entry.scheduledMicros, now > entry.scheduledMicros,
      let stored, now - entry.scheduledMicros > stored.schedule.misfire.grace,
      let schedule = try? Schedule(stored.schedule, taskID: task.id.description)
    else { return nil }
    // The runs due are the fire times in [scheduled, now]: this one and those it missed since.
    let decision = schedule.misfire(after: entry.scheduledMicros - 1, now: now, runsSoFar: Int(clamping: task.runsCompleted))
    if decision.runsToStart.first == entry.scheduledMicros { return nil }
    return MisfireMove(next: decision.runsToStart.first ?? decision.nextFireTime, skipped: decision.skipped)
  }

  /// Moves each misfired task on (compare-and-set on the version read with it), queues its new
  /// next run and counts what was skipped; returns the entries to try again (the store failed).
  private func apply(_ misfires: [Misfire]) async -> [DueQueue.Entry] {
    var retry: [DueQueue.Entry] = []
    for misfire in misfires {
      let next = misfire.move.next
      do {
        // nil: the task changed since it was read (perhaps long ago, read ahead: a detached
        // run's result changes its version, not its next run). It goes back to the queue, and
        // the next pass reads it afresh: dropped then if it moved on, decided again if not.
        guard
          try await store.advance(
            taskID: misfire.task.id, expectedVersion: misfire.task.version, nextRunMicros: next, state: next == nil ? .completed : .active) != nil
        else {
          retry.append(misfire.entry)
          // At once: the next pass reads the record afresh (nothing else may wake the loop).
          poke()
          continue
        }
      } catch {
        logger.error(
          "applying a misfire policy failed; retrying shortly", metadata: ["hourglass.task_id": "\(misfire.task.id)", "hourglass.error": "\(error)"])
        retry.append(misfire.entry)
        continue
      }
      if misfire.move.skipped > 0 { metrics.runsSkipped.increment(by: Int64(misfire.move.skipped)) }
      logger.info(
        "misfire policy applied",
        metadata: [
          "hourglass.task_id": "\(misfire.task.id)", "hourglass.scheduled_us": "\(misfire.entry.scheduledMicros)",
          "hourglass.next_us": "\(next.map(String.init) ?? "none")", "hourglass.skipped": "\(misfire.move.skipped)",
        ])
      if let next { enqueue(taskID: misfire.task.id, scheduledMicros: next, dueMicros: next, priority: misfire.task.priority) }
    }
    return retry
  }

  /// For a recurring task whose overlap policy is `allow`: the run after `scheduled` (misfire
  /// policy applied, with the runs it passes over), which becomes the task's next run as soon
  /// as this one is leased. Nil for every other task, and for the last run of a schedule.
  private func overlapNext(of task: TaskRecord, stored: StoredTaskSpec?, after scheduled: Int64, now: Int64) -> (next: Int64, skipped: Int)? {
    guard task.recurring, let stored, stored.schedule.overlap == .allow else {
      return nil
    }
    let plan = ResultPlanner(configuration: configuration).nextRun(task: task, stored: stored, after: scheduled, now: now, state: .succeeded)
    if case .reschedule(let next) = plan.next { return (next, plan.skipped) }
    return nil
  }

  private func blob(_ digest: BlobDigest) async throws -> [UInt8] {
    if let cached = blobCache[digest] { return cached }
    guard let bytes = try await store.blob(digest) else {
      throw TaskStoreError.io("blob \(digest) is missing")
    }
    if blobCache.count >= 1024 || blobCacheSize + bytes.count > Self.blobCacheBytes {
      blobCache.removeAll(keepingCapacity: true)
      blobCacheSize = 0
    }
    if bytes.count <= Self.blobCacheBytes / 4 {
      blobCache[digest] = bytes
      blobCacheSize += bytes.count
    }
    return bytes
  }
}

/// Where the misfire policy moves a task instead of leasing its overdue run.
struct MisfireMove: Equatable, Sendable {
  /// The task's new next run (it is queued and may be due at once); nil ends the task.
  var next: Int64?
  /// Due runs not started.
  var skipped: Int
}

/// A task whose overdue run the misfire policy moves elsewhere, as read for dispatch.
struct Misfire: Sendable {
  var entry: DueQueue.Entry
  var task: TaskRecord
  var move: MisfireMove
}
