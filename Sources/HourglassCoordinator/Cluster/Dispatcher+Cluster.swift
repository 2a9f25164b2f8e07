import HourglassCore
import HourglassStore
import Logging

/// Several coordinators on one PostgreSQL: which partitions this one dispatches, and the notices
/// the coordinators send each other (docs/storage.md, "Cluster").
///
/// Each coordinator with at least one executor connected heartbeats a membership row and, on
/// every pass, takes the partitions that rendezvous hashing gives it among the live coordinators
/// that dispatch (``PartitionAssignment``) and gives up the others; the store's partition
/// leases, with their epochs, fence its dispatch writes. A coordinator without executors could
/// not run what it owns, so it takes no partition (and serves users' calls only) until one
/// connects; if it advertises an address it still heartbeats a row marked as not dispatching,
/// which the others announce to their executors (``clusterPeers``), so that executors find it. Any
/// coordinator answers Schedule, Delete and the executors' results; a run that becomes due soon in
/// a partition another coordinator owns is announced to that one (`NOTIFY`), and a periodic sweep
/// of the owned partitions' recent due entries catches any notice that did not arrive.
extension Dispatcher {
  /// Whether this coordinator dispatches the runs of `taskID`.
  func owns(_ taskID: TaskID) -> Bool {
    guard let ownership else { return true }
    return ownership.epochs[Partition(taskID: taskID, count: store.partitionCount)] != nil
  }

  /// The partitions this coordinator dispatches, in order.
  var ownedPartitions: [Partition] {
    guard let ownership else { return (0..<store.partitionCount).map { Partition(rawValue: $0) } }
    return ownership.epochs.keys.sorted()
  }

  // MARK: Notices

  /// A run due soon in a partition owned elsewhere: the owner queues it only if it is inside the
  /// window it has loaded, so runs further out (which its loader will read) are not announced.
  /// The margin covers owners configured with a longer load-ahead and clocks a skew bound apart.
  func announceDue(_ entry: DueEntry) {
    guard cluster != nil else { return }
    let horizon = clock.nowMicros() + 2 * configuration.loadAheadMicros + configuration.skewBoundMicros
    guard entry.dueMicros < horizon else { return }
    announce(.due(entry))
  }

  func announce(_ notice: ClusterNotice) {
    outgoingNotices.append(notice)
    noticeWake.signal()
  }

  private func takeNotices() -> [ClusterNotice] {
    defer { outgoingNotices.removeAll(keepingCapacity: true) }
    return outgoingNotices
  }

  /// Sends announced notices, gathered while the previous send was in flight, until cancelled.
  func publishNotices() async {
    guard let cluster else { return }
    while !Task.isCancelled {
      await noticeWake.wait()
      let notices = takeNotices()
      if notices.isEmpty { continue }
      // Counted as they go out (a receiver may act on them before the send returns here).
      metrics.clusterNotices(notices, sent: true)
      do {
        try await cluster.publish(notices)
      } catch {
        // The owners' sweeps find these runs; a lost cancel leaves the run to its voided fence.
        logger.warning(
          "could not send notices to the other coordinators", metadata: ["hourglass.count": "\(notices.count)", "hourglass.error": "\(error)"])
      }
    }
  }

  /// Receives other coordinators' notices until cancelled.
  ///
  /// A subscription subscribes again after a failure, but a connection gone silent (half-open)
  /// fails nothing: that is what the pings of ``checkNoticeSubscription(now:)`` find, and a new
  /// subscription then replaces the silent one. The new one starts first and the old one ends
  /// once the new one listens, so nothing is lost in the switch itself (a notice may arrive
  /// twice, which every notice tolerates).
  func listenForNotices() async {
    guard cluster != nil else { return }
    startNoticeSubscription()
    // Until cancelled: the subscriptions are tasks of their own, so that one can be ended alone.
    let stopped = WakeSignal()
    await stopped.wait()
    noticesStopped = true
    let listeners = Array(noticeListeners.values)
    for listener in listeners { listener.cancel() }
    for listener in listeners { await listener.value }
  }

  /// Starts a subscription of a new generation (none once the dispatcher stops).
  private func startNoticeSubscription() {
    guard !noticesStopped else { return }
    noticeGeneration += 1
    noticeAttemptStartedAt = clock.nowMicros()
    let generation = noticeGeneration
    noticeListeners[generation] = Task { await self.keepSubscribed(generation: generation) }
  }

  /// Subscription `generation` starts an attempt to listen (at first, and after each failure):
  /// the time a hanging attempt is judged from.
  private func noticeAttemptStarted(_ generation: Int) {
    if generation == noticeGeneration { noticeAttemptStartedAt = clock.nowMicros() }
  }

  /// One subscription, subscribing again after a failure, until cancelled.
  private func keepSubscribed(generation: Int) async {
    guard let cluster else { return }
    // Until then the dispatcher's stop waits for it (it may still be closing its connection).
    defer { noticeListeners[generation] = nil }
    while !Task.isCancelled {
      noticeAttemptStarted(generation)
      do {
        try await cluster.listen(onListening: { await self.startedListening(generation: generation) }, { await self.received($0) })
      } catch {
        if Task.isCancelled { return }
        logger.warning("listening for cluster notices failed; retrying", metadata: ["hourglass.error": "\(error)"])
      }
      do { try await clock.sleep(untilMicros: clock.nowMicros() + 1_000_000) } catch { return }
    }
  }

  /// Returns once this coordinator's notice subscription has started `count` times (once by
  /// default): a signal for tests, as a notice published before that is only found by the sweep.
  func waitUntilListening(times count: Int = 1) async {
    if noticeSubscriptions >= count { return }
    await withCheckedContinuation { noticeSubscriptionWaiters.add(until: { $0 >= count }, $0) }
  }

  /// Returns once `count` `due` notices have arrived from other coordinators (a signal for tests).
  func waitUntilReceived(dueNotices count: Int) async {
    if dueNoticesReceived >= count { return }
    await withCheckedContinuation { dueNoticeWaiters.add(until: { $0 >= count }, $0) }
  }

  /// Returns once every ping this coordinator sent itself has come back (a signal for tests).
  func waitUntilPingsAnswered() async {
    if unansweredPings == 0 { return }
    await withCheckedContinuation { pingWaiters.add(until: { $0 == 0 }, $0) }
  }

  /// No ping is waiting for an answer any more.
  private func pingsAnswered() {
    unansweredPings = 0
    unansweredPingsSince = nil
    pingWaiters.resume(for: 0)
  }

  private func startedListening(generation: Int) async {
    guard generation >= listeningGeneration else {
      // An older subscription that subscribed again after a newer one listened: it ends.
      noticeListeners[generation]?.cancel()
      return
    }
    if generation > listeningGeneration {
      // The subscriptions this one replaces end now that it listens.
      for (older, listener) in noticeListeners where older < generation { listener.cancel() }
      listeningGeneration = generation
    }
    pingsAnswered()
    await rescanOwnedPartitions()
    noticeSubscriptions += 1
    noticeSubscriptionWaiters.resume(for: noticeSubscriptions)
  }

  /// At each ownership pass: sends this coordinator a ping through the database, and replaces
  /// the subscription when two pings or more went unanswered for `noticeSilenceMicros`. Time
  /// and count both: passes run back to back at times (a rebalance), faster than a round trip.
  /// A new subscription that has not listened within `noticeSilenceMicros` either (its connection
  /// hangs as the old one's did) is replaced in turn.
  func checkNoticeSubscription(now: Int64) {
    let silence = configuration.noticeSilenceMicros
    if noticeGeneration > listeningGeneration {
      // The newest subscription has not listened yet: pings could only come back through an
      // older, silent one. One whose attempt fails is tried again each second by its own loop;
      // one whose attempt hangs is replaced.
      guard let started = noticeAttemptStartedAt, now - started >= silence else { return }
      logger.warning(
        "an attempt to subscribe to notices hangs; subscribing on a new connection",
        metadata: ["hourglass.waited_ms": "\((now - started) / 1000)"])
      metrics.clusterResubscriptions.increment()
      noticeListeners[noticeGeneration]?.cancel()
      startNoticeSubscription()
      return
    }
    if let since = unansweredPingsSince, unansweredPings >= 2, now - since >= silence {
      logger.warning(
        "no ping came back through the notice subscription; subscribing on a new connection",
        metadata: ["hourglass.unanswered": "\(unansweredPings)", "hourglass.silent_ms": "\((now - since) / 1000)"])
      metrics.clusterResubscriptions.increment()
      pingsAnswered()
      startNoticeSubscription()
      return
    }
    if unansweredPingsSince == nil { unansweredPingsSince = now }
    unansweredPings += 1
    announce(.ping(from: configuration.coordinatorID))
  }

  func received(_ notices: [ClusterNotice]) async {
    metrics.clusterNotices(notices, sent: false)
    var added = false
    for notice in notices {
      switch notice {
      case .due(let entry):
        dueNoticesReceived += 1
        dueNoticeWaiters.resume(for: dueNoticesReceived)
        guard owns(entry.taskID), entry.dueMicros < loadedUntil else { continue }
        if queue.push(.init(taskID: entry.taskID, scheduledMicros: entry.scheduledMicros, dueMicros: entry.dueMicros, priority: entry.priority)) {
          added = true
        }
      case .cancel(let runID, let reason):
        await cancel(runID, reason: reason)
      case .rebalance(let sender):
        if joinedCluster && sender != configuration.coordinatorID { ownershipWake.signal() }
      case .ping(let sender):
        if sender == configuration.coordinatorID { pingsAnswered() }
      }
    }
    if added {
      publishQueue()
      wake.signal()
    }
  }

  /// After (re)subscribing, notices sent meanwhile may be lost: read the owned partitions'
  /// loaded window again (the queue drops what it already holds).
  private func rescanOwnedPartitions() async {
    let partitions = ownedPartitions
    guard !partitions.isEmpty, loadedUntil != .min else { return }
    do {
      try await load(partitions: partitions, from: Self.backlogStartMicros, until: loadedUntil)
    } catch {
      logger.warning("reading the owned partitions again failed; the sweep will", metadata: ["hourglass.error": "\(error)"])
    }
  }

  // MARK: Partition ownership

  /// Returns once this coordinator owns exactly `count` partitions (a signal for tests).
  func waitUntilOwning(_ count: Int) async {
    if ownedPartitions.count == count { return }
    await withCheckedContinuation { ownershipWaiters.add(until: { $0 == count }, $0) }
  }

  private func wakeOwnershipWaiters() {
    ownershipWaiters.resume(for: ownedPartitions.count)
  }

  /// Heartbeats this coordinator and keeps its share of the partitions, a pass every third of
  /// the partition lease (or as soon as a first executor connects), until cancelled; then gives
  /// every partition up and leaves the cluster.
  func keepPartitions() async {
    guard cluster != nil else { return }
    while !Task.isCancelled {
      let started = clock.nowMicros()
      await keepPartitionsPass()
      await sleep(untilMicros: started + configuration.partitionLeaseMicros / 3, orSignal: ownershipWake)
      // Woken early (an executor, a rebalance notice, a refused lease): not more than a pass
      // every 100 ms, so coordinators that briefly disagree on the membership cannot make each
      // other pass in a tight loop.
      do { try await clock.sleep(untilMicros: started + 100_000) } catch { break }
    }
    await leaveWithinTimeLimit()
  }

  /// Leaves the cluster at shutdown, giving up after `leaveTimeoutMicros`: with the database
  /// unreachable the partition leases simply run out, and a shutdown must not wait for a
  /// connection that never comes.
  ///
  /// The leave and the time limit are tasks of their own (the caller is being cancelled, and the
  /// store would refuse to start), and whichever ends first ends the wait; the other is cancelled
  /// but not waited for. A task group would wait for both, so a store call that does not
  /// return promptly when cancelled would hold the shutdown past its limit.
  func leaveWithinTimeLimit() async {
    let clock = self.clock
    let leaving = Task { await self.leaveCluster(reason: "shutting down") }
    let left = await finishesFirst(
      { await leaving.value }, before: { try? await clock.sleep(untilMicros: clock.nowMicros() + Self.leaveTimeoutMicros) })
    if !left { leaving.cancel() }
  }

  /// How long a shutting-down coordinator tries to leave the cluster.
  static let leaveTimeoutMicros: Int64 = 2_000_000

  /// Gives every partition up and leaves the membership, so the others take them at their next
  /// pass rather than after the leases run out.
  private func leaveCluster(reason: String) async {
    guard let cluster else { return }
    drop(ownedPartitions, reason: reason)
    joinedCluster = false
    metrics.clusterCoordinators.record(0)
    do {
      // A process that never took an incarnation never wrote a row or took a lease.
      if let incarnation { try await cluster.leaveCluster(configuration.coordinatorID, incarnation: incarnation) }
      try await cluster.publish([.rebalance(from: configuration.coordinatorID)])
      metrics.clusterNotices([.rebalance(from: configuration.coordinatorID)], sent: true)
    } catch {
      logger.warning("could not leave the cluster; its partitions move when their leases run out", metadata: ["hourglass.error": "\(error)"])
    }
  }

  /// One pass: heartbeat, then give up what is no longer this coordinator's, then take or renew
  /// the rest; without executors, leave instead. Passes are idempotent (tests call them), and
  /// run one at a time: a pass called while another is in flight starts when that one ends.
  /// Interleaved, two passes would each adopt the outcome of their own acquire, and the one
  /// adopted last could keep an expiry later than the one the store was left with.
  func keepPartitionsPass() async {
    while partitionPassInFlight {
      await withCheckedContinuation { partitionPassWaiters.append($0) }
    }
    partitionPassInFlight = true
    defer {
      partitionPassInFlight = false
      if !partitionPassWaiters.isEmpty { partitionPassWaiters.removeFirst().resume() }
    }
    await keepPartitionsPassAlone()
  }

  private func keepPartitionsPassAlone() async {
    guard let cluster, let ownership else { return }
    checkNoticeSubscription(now: clock.nowMicros())
    let me = configuration.coordinatorID
    guard !superseded else { return }
    guard await checkClock(against: cluster) else {
      // Its clock would write wrong expiries into the membership and judge the others' rows by
      // them: out of the cluster until it is back within the bound. Its partitions go to the
      // others.
      if joinedCluster { await leaveCluster(reason: "its clock is off the database's beyond the bound") }
      clusterPeers = nil
      metrics.clusterAnnounced.record(0)
      return
    }
    let dispatching = !sessions.isEmpty
    if !dispatching {
      // Checked at a pass, not at each disconnection: an executor that reconnects at once does
      // not move partitions around.
      if joinedCluster {
        await leaveCluster(reason: "no executor connected")
      }
      // Without an address to announce there is no reason to be in the membership at all.
      guard configuration.advertiseAddress != nil else {
        clusterPeers = nil
        metrics.clusterAnnounced.record(0)
        return
      }
    }
    let now = clock.nowMicros()
    let expiresAt = now + configuration.partitionLeaseMicros
    do {
      let incarnation = try await currentIncarnation(cluster)
      if dispatching { joinedCluster = true }
      let members = try await cluster.heartbeatCoordinator(
        CoordinatorMember(id: me, address: configuration.advertiseAddress, dispatching: dispatching, incarnation: incarnation), now: now,
        expiresAt: expiresAt)
      if let row = members.first(where: { $0.id == me }), row.incarnation > incarnation {
        await standDown(for: row.incarnation)
        return
      }
      clusterPeers = members.filter { $0.address != nil }
      metrics.clusterAnnounced.record(clusterPeers?.count ?? 0)
      guard dispatching else { return }
      // Partitions go to the coordinators that dispatch; the others are only announced.
      let dispatchers = members.filter(\.dispatching).map(\.id)
      metrics.clusterCoordinators.record(Set(dispatchers + [me]).count)
      let plan = PartitionAssignment(me: me, members: dispatchers, held: Set(ownership.epochs.keys), partitionCount: store.partitionCount)
      if !plan.release.isEmpty {
        // Out of the queue first, so nothing of these partitions is leased after the release.
        drop(plan.release, reason: "another coordinator is preferred")
        try await cluster.releasePartitions(plan.release, owner: me, incarnation: incarnation)
      }
      let held = try await cluster.acquirePartitions(plan.acquire, owner: me, incarnation: incarnation, now: now, expiresAt: expiresAt)
      await adopt(held, requested: plan.acquire, expiresAt: expiresAt)
      if !plan.release.isEmpty || held.count < plan.acquire.count {
        // Released partitions wait for their preferred owner, and partitions this coordinator is
        // preferred for are held by another: both move at the others' next pass, so ask for it.
        announce(.rebalance(from: me))
      }
    } catch {
      if Task.isCancelled { return }
      logger.warning("keeping the partition leases failed; retrying", metadata: ["hourglass.error": "\(error)"])
      // Leases that ran out meanwhile are someone else's to take: stop dispatching them (the
      // store refuses this coordinator's leases for them anyway).
      if let expires = partitionsExpireAt, clock.nowMicros() >= expires {
        drop(ownedPartitions, reason: "partition leases ran out")
      }
    }
  }

  /// This process's incarnation, taken from the store at its first pass.
  private func currentIncarnation(_ cluster: any PartitionLeasing) async throws -> Int64 {
    // Passes run one at a time (keepPartitionsPass), so no other takes one meanwhile.
    if let incarnation { return incarnation }
    let taken = try await cluster.newIncarnation()
    incarnation = taken
    return taken
  }

  /// A later process of this coordinator's id runs (this one was paused, or started twice):
  /// this one dispatches nothing more, for good. Its partitions are the later one's already;
  /// its leases are fenced by their epochs.
  private func standDown(for later: Int64) async {
    superseded = true
    logger.error(
      "a later process of this coordinator's id runs: this one dispatches nothing more; stop it, or give each coordinator its own --id",
      metadata: ["hourglass.incarnation": "\(incarnation ?? 0)", "hourglass.later": "\(later)"])
    drop(ownedPartitions, reason: "a later process of this coordinator's id took over")
    joinedCluster = false
    clusterPeers = nil
    metrics.clusterCoordinators.record(0)
    metrics.clusterAnnounced.record(0)
  }

  /// Measures this coordinator's clock against the database's (offset corrected by half the
  /// round trip) and returns whether it is within `clusterClockBoundMicros`. A coordinator beyond
  /// it dispatches nothing and stays out of the membership: it could recover a run lease another
  /// coordinator granted while that run's executor still holds it, or take a partition lease
  /// that has not run out; the renewals it still answers are corrected by the offset. The round
  /// trip leaves the offset uncertain by half of it, and each verdict takes the uncertainty
  /// against a change: a coordinator goes beyond the bound when its offset is surely more than
  /// the bound, and is back when it is surely within half the bound (so an offset near the bound
  /// does not move partitions at every pass, and a slow sample changes nothing). A failed read
  /// changes nothing either.
  private func checkClock(against cluster: any PartitionLeasing) async -> Bool {
    guard let bound = configuration.clusterClockBoundMicros else { return true }
    let sent = clock.nowMicros()
    guard let database = try? await cluster.databaseClockMicros() else { return !clockBeyondBound }
    let received = clock.nowMicros()
    let offset = sent / 2 + received / 2 - database
    let uncertainty = (received - sent) / 2
    metrics.clusterClockOffset.record(Double(offset) / 1_000_000)
    let beyond = clockBeyondBound ? abs(offset) + uncertainty > bound / 2 : abs(offset) - uncertainty > bound
    clockCorrectionMicros.store(beyond ? offset : 0, ordering: .relaxed)
    if beyond != clockBeyondBound {
      clockBeyondBound = beyond
      let metadata: Logger.Metadata = ["hourglass.offset_ms": "\(offset / 1000)", "hourglass.bound_ms": "\(bound / 1000)"]
      if beyond {
        logger.error("this coordinator's clock is off the database's beyond the bound: it dispatches nothing until it is back within", metadata: metadata)
      } else {
        logger.notice("this coordinator's clock is back within the bound of the database's: it dispatches again", metadata: metadata)
      }
    }
    return !beyond
  }

  /// Takes the outcome of an acquire: partitions newly held are loaded from their backlog;
  /// requested partitions not granted (another coordinator holds them) are dropped.
  private func adopt(_ held: [PartitionLease], requested: [Partition], expiresAt: Int64) async {
    guard var fence = ownership else { return }
    let granted = Set(held.map(\.partition))
    let lost = requested.filter { !granted.contains($0) && fence.epochs[$0] != nil }
    if !lost.isEmpty { drop(lost, reason: "held by another coordinator") }
    fence = ownership ?? fence
    var new: [Partition] = []
    for lease in held {
      // A partition held with another epoch was lost and taken again since the last pass:
      // what was scheduled into it meanwhile is read as for one newly taken.
      if fence.epochs[lease.partition] != lease.epoch { new.append(lease.partition) }
      fence.epochs[lease.partition] = lease.epoch
    }
    ownership = fence
    partitionsExpireAt = held.isEmpty ? nil : expiresAt
    wakeOwnershipWaiters()
    // Runs refused while a partition lease had run out wait for this pass.
    wake.signal()
    for partition in new { metrics.shardOwned(partition: partition.rawValue, owner: configuration.coordinatorID, true) }
    if !new.isEmpty {
      logger.info("partitions taken", metadata: ["hourglass.partitions": "\(new.map(\.rawValue))", "hourglass.owned": "\(fence.epochs.count)"])
    }
    // Newly taken partitions, and those whose first load failed at an earlier pass.
    let unloaded = Set(new).union(backlogsToLoad.filter { fence.epochs[$0] != nil }).sorted()
    backlogsToLoad = []
    guard !unloaded.isEmpty, loadedUntil != .min else { return }
    do {
      // Their overdue runs (the former owner's downtime included) and the loaded window.
      try await load(partitions: unloaded, from: Self.backlogStartMicros, until: loadedUntil)
    } catch {
      if Task.isCancelled { return }
      // The sweep finds their overdue runs, but those due later in the loaded window only once
      // they fall due: all of them are read again at the next pass.
      backlogsToLoad = Set(unloaded)
      logger.warning("loading newly taken partitions failed; trying again at the next pass", metadata: ["hourglass.error": "\(error)"])
    }
  }

  /// Stops dispatching `partitions`: their queued runs are forgotten (their leases already
  /// granted run on and their results are recorded as usual).
  private func drop(_ partitions: [Partition], reason: String) {
    guard var fence = ownership else { return }
    let gone = Set(partitions.filter { fence.epochs[$0] != nil })
    guard !gone.isEmpty else { return }
    for partition in gone {
      fence.epochs[partition] = nil
      metrics.shardOwned(partition: partition.rawValue, owner: configuration.coordinatorID, false)
    }
    ownership = fence
    wakeOwnershipWaiters()
    let count = store.partitionCount
    queue.remove { gone.contains(Partition(taskID: $0, count: count)) }
    prefetched = prefetched.filter { !gone.contains(Partition(taskID: $0.key, count: count)) }
    publishQueue()
    logger.info(
      "partitions given up", metadata: ["hourglass.partitions": "\(gone.map(\.rawValue).sorted())", "hourglass.reason": "\(reason)"])
  }
}
