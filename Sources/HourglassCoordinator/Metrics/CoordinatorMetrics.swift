import CoreMetrics
import HourglassRPC
import HourglassStore
import Synchronization

/// The coordinator's metrics, recorded through the swift-metrics API into the factory the
/// coordinator was given (a Prometheus registry's in production, a test's own in tests). Names
/// follow Prometheus conventions; docs/operations.md lists every one.
final class CoordinatorMetrics: Sendable {
  let factory: any MetricsFactory

  /// Tasks accepted by Schedule; `rate()` of it is tasks scheduled per second.
  let tasksScheduled: Counter
  /// Schedule calls answered UNAVAILABLE because too many were already waiting for the store.
  let schedulesShed: Counter
  /// Leases pushed to executors.
  let runsDispatched: Counter
  /// Results recorded as succeeded.
  let runsSucceeded: Counter
  /// Results recorded as failed or timed out (every attempt).
  let runsFailed: Counter
  /// Results recorded as cancelled.
  let runsCancelled: Counter
  /// Failed attempts that were given another one.
  let runsRetried: Counter
  /// Runs the misfire policy (or the overlap policy `skip`) did not start.
  let runsSkipped: Counter
  /// Leases that ran out without a result and were recovered.
  let leasesExpired: Counter
  /// How long after its due time each run was dispatched.
  let dispatchLateness: CoreMetrics.Timer
  /// Runs in the due-time queue (waiting or due).
  let runsQueued: Gauge
  /// Runs past their due time and not yet dispatched.
  let runsOverdue: Gauge
  /// Executor streams registered.
  let executorsConnected: Gauge
  /// Executors currently outside the clock-skew bound.
  let executorsSkewRefused: Gauge
  /// Times the coordinator stopped reading an executor's stream because that stream's results
  /// in flight were at their bound (the store is behind the results).
  let executorResultWaits: Counter
  /// In a cluster: the coordinators in the membership at this one's last ownership pass (0 while
  /// it is not in it; not reported on a single node).
  let clusterCoordinators: Gauge
  /// In a cluster: the coordinators this one announces to its executors (live, with an address)
  /// at its last membership pass.
  let clusterAnnounced: Gauge
  /// In a cluster: times the notice subscription was replaced because this coordinator's pings
  /// to itself stopped coming back.
  let clusterResubscriptions: Counter
  /// In a cluster: this coordinator's clock minus the database's, at its last ownership pass.
  let clusterClockOffset: Gauge
  /// Deleted tasks whose rows the purge removed.
  let tasksPurgedDeleted: Counter
  /// Finished tasks the purge removed once their retention had passed.
  let tasksPurgedFinished: Counter
  /// Stored blobs removed because no task refers to them any more.
  let blobsRemoved: Counter

  /// How long each kind of store write took when it succeeded, from the call to the store's
  /// answer (the wait for the store's writer and the commit's sync included):
  /// `hourglass_store_write_seconds`. Failed writes are logged, not timed.
  private let storeWrites: [StoreWrite: CoreMetrics.Timer]

  /// The store writes whose time is measured, by the `operation` label.
  enum StoreWrite: String, CaseIterable, Sendable {
    /// A Schedule's task, through the store's group commit.
    case insert
    /// Leases of due runs.
    case lease
    /// Lease renewals, gathered from every executor stream.
    case renewal
    /// Run results, gathered from every executor stream (and runs whose last lease ran out).
    case result
    /// Expired leases taken back.
    case recover
  }

  private let byOperator = Mutex<[String: Counter]>([:])
  private let rpcCounters = Mutex<[RPCKey: Counter]>([:])
  private let rpcTimers = Mutex<[String: CoreMetrics.Timer]>([:])
  private let noticeCounters = Mutex<[String: Counter]>([:])

  private struct RPCKey: Hashable {
    var method: String
    var code: StatusCode
  }

  init(factory: any MetricsFactory) {
    self.factory = factory
    tasksScheduled = Counter(label: "hourglass_tasks_scheduled_total", factory: factory)
    schedulesShed = Counter(label: "hourglass_schedules_shed_total", factory: factory)
    runsDispatched = Counter(label: "hourglass_runs_dispatched_total", factory: factory)
    runsSucceeded = Counter(label: "hourglass_runs_succeeded_total", factory: factory)
    runsFailed = Counter(label: "hourglass_runs_failed_total", factory: factory)
    runsCancelled = Counter(label: "hourglass_runs_cancelled_total", factory: factory)
    runsRetried = Counter(label: "hourglass_runs_retried_total", factory: factory)
    runsSkipped = Counter(label: "hourglass_runs_skipped_total", factory: factory)
    leasesExpired = Counter(label: "hourglass_leases_expired_total", factory: factory)
    executorResultWaits = Counter(label: "hourglass_executor_result_waits_total", factory: factory)
    storeWrites = Dictionary(
      uniqueKeysWithValues: StoreWrite.allCases.map {
        ($0, CoreMetrics.Timer(label: "hourglass_store_write_seconds", dimensions: [("operation", $0.rawValue)], factory: factory))
      })
    dispatchLateness = CoreMetrics.Timer(label: "hourglass_dispatch_lateness_seconds", factory: factory)
    runsQueued = Gauge(label: "hourglass_runs_queued", factory: factory)
    runsOverdue = Gauge(label: "hourglass_runs_overdue", factory: factory)
    executorsConnected = Gauge(label: "hourglass_executors_connected", factory: factory)
    executorsSkewRefused = Gauge(label: "hourglass_executors_skew_refused", factory: factory)
    clusterCoordinators = Gauge(label: "hourglass_cluster_coordinators", factory: factory)
    clusterAnnounced = Gauge(label: "hourglass_cluster_announced_coordinators", factory: factory)
    clusterResubscriptions = Counter(label: "hourglass_cluster_notice_resubscriptions_total", factory: factory)
    clusterClockOffset = Gauge(label: "hourglass_cluster_clock_offset_seconds", factory: factory)
    tasksPurgedDeleted = Counter(label: "hourglass_tasks_purged_total", dimensions: [("reason", "deleted")], factory: factory)
    tasksPurgedFinished = Counter(label: "hourglass_tasks_purged_total", dimensions: [("reason", "finished")], factory: factory)
    blobsRemoved = Counter(label: "hourglass_blobs_removed_total", factory: factory)
  }

  /// A task failed for good: its last attempt failed (the seed design's `user_task_fail`).
  func taskFailed(operatorName: String) {
    let counter = byOperator.withLock { counters in
      if let counter = counters[operatorName] { return counter }
      let counter = Counter(label: "hourglass_task_failures_total", dimensions: [("operator", operatorName)], factory: factory)
      counters[operatorName] = counter
      return counter
    }
    counter.increment()
  }

  /// A store write of kind `operation` that began at `started` has been answered.
  func storeWrite(_ operation: StoreWrite, since started: ContinuousClock.Instant) {
    storeWrites[operation]?.recordNanoseconds((ContinuousClock.now - started).nanoseconds)
  }

  /// Partitions this coordinator owns (all of them, on a single node).
  func ownShards(partitions: Int, owner: String) {
    for partition in 0..<partitions {
      shardOwned(partition: Int32(partition), owner: owner, true)
    }
  }

  /// Notices sent to or received from the other coordinators of a cluster, by kind.
  func clusterNotices(_ notices: [ClusterNotice], sent: Bool) {
    for notice in notices {
      let kind: String
      switch notice {
      case .due: kind = "due"
      case .cancel: kind = "cancel"
      case .rebalance: kind = "rebalance"
      case .ping: kind = "ping"
      }
      let key = "\(sent ? "sent" : "received") \(kind)"
      let counter = noticeCounters.withLock { counters in
        if let counter = counters[key] { return counter }
        let counter = Counter(
          label: "hourglass_cluster_notices_total", dimensions: [("direction", sent ? "sent" : "received"), ("kind", kind)], factory: factory)
        counters[key] = counter
        return counter
      }
      counter.increment()
    }
  }

  /// Whether this coordinator owns `partition` (1) or no longer does (0), in a cluster.
  func shardOwned(partition: Int32, owner: String, _ owned: Bool) {
    Gauge(label: "hourglass_shard_owner", dimensions: [("partition", "\(partition)"), ("owner", owner)], factory: factory).record(owned ? 1 : 0)
  }

  /// One RPC ended. `method` is a registered path or `unknown` (clients choose the paths they
  /// send, so unregistered ones share one label value).
  func rpcFinished(method: String, code: StatusCode, duration: Duration) {
    let counter = rpcCounters.withLock { counters in
      let key = RPCKey(method: method, code: code)
      if let counter = counters[key] { return counter }
      let counter = Counter(label: "hourglass_rpc_server_handled_total", dimensions: [("method", method), ("code", "\(code)")], factory: factory)
      counters[key] = counter
      return counter
    }
    let timer = rpcTimers.withLock { timers in
      if let timer = timers[method] { return timer }
      let timer = CoreMetrics.Timer(label: "hourglass_rpc_server_handling_seconds", dimensions: [("method", method)], factory: factory)
      timers[method] = timer
      return timer
    }
    counter.increment()
    timer.recordNanoseconds(duration.nanoseconds)
  }

  /// Gauges for one connected executor, labelled by its name.
  func executorGauges(_ executorID: String) -> ExecutorGauges {
    ExecutorGauges(
      freeSlots: Gauge(label: "hourglass_executor_free_slots", dimensions: [("executor", executorID)], factory: factory),
      skewSeconds: Gauge(label: "hourglass_executor_clock_skew_seconds", dimensions: [("executor", executorID)], factory: factory),
      skewRefusals: Counter(label: "hourglass_executor_skew_refusals_total", dimensions: [("executor", executorID)], factory: factory)
    )
  }

  /// The per-executor gauges; destroyed when the executor's last stream ends.
  struct ExecutorGauges: Sendable {
    var freeSlots: Gauge
    var skewSeconds: Gauge
    var skewRefusals: Counter

    func destroy() {
      freeSlots.destroy()
      skewSeconds.destroy()
      skewRefusals.destroy()
    }
  }
}

extension Duration {
  /// Whole nanoseconds, saturating.
  var nanoseconds: Int64 {
    let (seconds, attoseconds) = components
    let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
    return overflow ? .max : scaled &+ attoseconds / 1_000_000_000
  }
}
