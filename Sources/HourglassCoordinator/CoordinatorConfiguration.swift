import HourglassTransport

/// How the coordinator dispatches and leases; validated once at start-up.
public struct CoordinatorConfiguration: Sendable, Hashable {
  /// This coordinator's name (lease owner records name executors; this names the coordinator in logs).
  public var coordinatorID: String
  /// How long a lease lasts without renewal, in microseconds.
  public var leaseDurationMicros: Int64
  /// How often executors should heartbeat, in microseconds.
  public var heartbeatIntervalMicros: Int64
  /// The largest clock offset an executor may have and still receive leases; also added to a
  /// lease's expiry before its run is dispatched again.
  public var skewBoundMicros: Int64
  /// How far ahead of now the due queue is filled from the store.
  public var loadAheadMicros: Int64
  /// How long before its due time a run may be leased. Its grant tells the executor to start it
  /// when it is due (`LeaseGrant.start_after`, counted from receipt on the executor's monotonic
  /// clock), so the lease transaction, its sync and the push happen before the due time instead
  /// of after it. 0 leases runs only once due. A run leased ahead counts as started (Delete
  /// answers FAILED_PRECONDITION for it; its lease and timeout count from the grant).
  public var leaseAheadMicros: Int64
  /// How often expired leases are recovered.
  public var recoveryIntervalMicros: Int64
  /// Due entries read per store query.
  public var loadBatch: Int
  /// Most leases created in one store transaction (the dispatcher batches due runs).
  public var leaseBatch: Int
  /// Most run results recorded in one store transaction (results from every executor stream
  /// are gathered, as inserts are).
  public var resultBatch: Int
  /// Least time between two result transactions, in microseconds (0: back to back). Spacing
  /// them leaves the store's writer free for lease transactions in between.
  public var resultSpacingMicros: Int64
  /// Most results one executor stream may have in flight (read, not yet acknowledged). At the
  /// bound the coordinator stops reading that stream until earlier results are answered.
  public var resultsInFlightPerExecutor: Int
  /// Most bytes of results (output tails and errors, mostly) one executor stream may have in
  /// flight; the same back-pressure as ``resultsInFlightPerExecutor``.
  public var resultBytesInFlightPerExecutor: Int
  /// Most Schedule calls this coordinator lets wait for the store at once; past it (or past
  /// ``scheduleBytesInFlight``) Schedule answers UNAVAILABLE at once, to be retried with backoff,
  /// instead of queueing without bound behind a store that has fallen behind.
  public var schedulesInFlight: Int
  /// Most bytes of tasks (binaries and arguments, mostly) waiting for the store at once.
  public var scheduleBytesInFlight: Int
  /// The attempt timeout for tasks that do not set one.
  public var defaultTimeoutMicros: Int64
  /// A one-shot time this far in the past is still accepted (run now) rather than refused.
  public var pastGraceMicros: Int64
  /// Users' bearer tokens (empty: certificates only).
  public var tokens: BearerTokens
  /// In a cluster (a store with partition leases): how long a partition lease lasts unless
  /// renewed; renewed every third of it. A coordinator that stops without leaving gives its
  /// partitions up after this long.
  public var partitionLeaseMicros: Int64
  /// In a cluster: the "host:port" executors reach this coordinator at, announced to every
  /// executor of the cluster so that they connect here without being told (nil: executors
  /// connect only if given this coordinator's address). With an address the coordinator joins
  /// the membership before its first executor arrives, as one that does not dispatch yet.
  public var advertiseAddress: String?
  /// How often the owned partitions' recent due entries are read again, catching any run due
  /// and in no queue: one whose load or lease recovery failed, and in a cluster one another
  /// coordinator's notice did not bring (a lost connection, a clock ahead). (Named when only
  /// clusters swept.)
  public var clusterSweepMicros: Int64
  /// The most due entries one sweep reads. With a backlog larger than that (executors short of
  /// slots, every waiting run already queued), consecutive sweeps take turns through it, each
  /// going on from where the last stopped, instead of each reading all of it again.
  public var sweepLimit: Int
  /// In a cluster: how long the pings a coordinator sends itself at each ownership pass may
  /// go unanswered (two at least) before it replaces its notice subscription, whose connection
  /// has then gone silent without an error (docs/storage.md, "Cluster").
  public var noticeSilenceMicros: Int64
  /// In a cluster: how far this coordinator's clock may be from the database's, measured at each
  /// ownership pass (corrected by half the round trip), before it stops dispatching: run and
  /// partition leases written by one coordinator's clock are judged by another's, so two
  /// coordinators must agree within the skew bound, and each within half of it of the database
  /// does. nil: not checked.
  public var clusterClockBoundMicros: Int64?
  /// How long a finished task (completed, or dead after its last attempt) is kept, counted from
  /// its last run's scheduled time (its creation, if it never ran); Get, List and its run
  /// history answer for it until then. nil keeps finished tasks for ever.
  public var finishedTaskRetentionMicros: Int64?
  /// How long a recurring task keeps the runs it has finished, counted back from each new
  /// result's scheduled time; older ones are removed as that result is recorded. nil keeps
  /// every run.
  public var runHistoryRetentionMicros: Int64?
  /// How long a deleted task's row (with its runs and idempotency key) stays before it is
  /// purged. It is invisible from the moment it is deleted; this is a grace in which results
  /// of a run the delete cancelled still find their run.
  public var deletedTaskRetentionMicros: Int64
  /// How often the purge of finished and deleted tasks runs.
  public var purgeIntervalMicros: Int64
  /// Most tasks removed per purge transaction. Small, so a purge never holds the store's
  /// writer for long: on SQLite, lease transactions wait behind it.
  public var purgeBatch: Int
  /// Most stored blobs each purge pass looks at for ones no task refers to, walking the blobs
  /// in digest order and starting over at the end. A safety net: purges remove the blobs of the
  /// tasks they remove. 0 turns the walk off.
  public var blobSweepBatch: Int

  /// Defaults: 30 s leases, 5 s heartbeats, 500 ms skew bound, 60 s load-ahead; 4,096 results
  /// or 16 MiB of them in flight per executor stream; 65,536 Schedule calls or 256 MiB of tasks
  /// waiting for the store;
  /// in a cluster, 10 s partition leases and a 5 s sweep; finished tasks and recurring tasks'
  /// runs kept 7 days, deleted tasks purged after an hour, a purge pass every minute that also
  /// looks at 1,024 blobs.
  public static var defaults: CoordinatorConfiguration {
    CoordinatorConfiguration(
      coordinatorID: "coordinator",
      leaseDurationMicros: 30_000_000,
      heartbeatIntervalMicros: 5_000_000,
      skewBoundMicros: 500_000,
      loadAheadMicros: 60_000_000,
      leaseAheadMicros: 5_000,
      recoveryIntervalMicros: 1_000_000,
      loadBatch: 10_000,
      leaseBatch: 512,
      resultBatch: 1_000,
      resultSpacingMicros: 5_000,
      resultsInFlightPerExecutor: 4_096,
      resultBytesInFlightPerExecutor: 16 << 20,
      schedulesInFlight: 65_536,
      scheduleBytesInFlight: 256 << 20,
      defaultTimeoutMicros: 3_600_000_000,
      pastGraceMicros: 60_000_000,
      tokens: BearerTokens(),
      partitionLeaseMicros: 10_000_000,
      advertiseAddress: nil,
      clusterSweepMicros: 5_000_000,
      sweepLimit: 20_000,
      noticeSilenceMicros: 10_000_000,
      clusterClockBoundMicros: 250_000,
      finishedTaskRetentionMicros: 7 * 24 * 3_600_000_000,
      runHistoryRetentionMicros: 7 * 24 * 3_600_000_000,
      deletedTaskRetentionMicros: 3_600_000_000,
      purgeIntervalMicros: 60_000_000,
      purgeBatch: 256,
      blobSweepBatch: 1_024
    )
  }

  /// Checks every field; the error names the one that is wrong.
  public func validate() throws {
    func positive(_ value: Int64, _ name: String) throws {
      guard value > 0 else { throw ConfigurationError(field: name, reason: "must be positive") }
    }
    try positive(leaseDurationMicros, "lease_duration")
    try positive(heartbeatIntervalMicros, "heartbeat_interval")
    try positive(loadAheadMicros, "load_ahead")
    try positive(recoveryIntervalMicros, "recovery_interval")
    try positive(defaultTimeoutMicros, "default_timeout")
    try positive(partitionLeaseMicros, "partition_lease")
    try positive(clusterSweepMicros, "cluster_sweep")
    try positive(noticeSilenceMicros, "notice_silence")
    guard skewBoundMicros >= 0 else { throw ConfigurationError(field: "skew_bound", reason: "must not be negative") }
    if let clusterClockBoundMicros {
      try positive(clusterClockBoundMicros, "cluster_clock_bound")
      // Two coordinators each within it of the database's clock are within the skew bound of
      // each other, which is what lease recovery allows for.
      guard clusterClockBoundMicros <= skewBoundMicros / 2 else {
        throw ConfigurationError(field: "cluster_clock_bound", reason: "must be at most half the skew bound")
      }
    }
    // The id travels in notices as one line of at most 200 characters (ClusterNotice).
    guard !coordinatorID.isEmpty, coordinatorID.count <= 200, !coordinatorID.contains(where: \.isNewline) else {
      throw ConfigurationError(field: "coordinator_id", reason: "must be 1 to 200 characters on one line")
    }
    guard leaseAheadMicros >= 0, leaseAheadMicros < loadAheadMicros / 2, leaseAheadMicros < leaseDurationMicros / 2 else {
      throw ConfigurationError(field: "lease_ahead", reason: "must be at least 0 and under half the load-ahead and half the lease duration")
    }
    guard heartbeatIntervalMicros < leaseDurationMicros else {
      throw ConfigurationError(field: "heartbeat_interval", reason: "must be shorter than the lease duration")
    }
    guard sweepLimit >= 1 else { throw ConfigurationError(field: "sweep_limit", reason: "must be at least 1") }
    guard loadBatch >= 1 else { throw ConfigurationError(field: "load_batch", reason: "must be at least 1") }
    guard leaseBatch >= 1 else { throw ConfigurationError(field: "lease_batch", reason: "must be at least 1") }
    guard resultBatch >= 1 else { throw ConfigurationError(field: "result_batch", reason: "must be at least 1") }
    guard resultSpacingMicros >= 0 else { throw ConfigurationError(field: "result_spacing", reason: "must not be negative") }
    guard resultsInFlightPerExecutor >= 1 else { throw ConfigurationError(field: "results_in_flight_per_executor", reason: "must be at least 1") }
    guard schedulesInFlight >= 1 else { throw ConfigurationError(field: "schedules_in_flight", reason: "must be at least 1") }
    guard scheduleBytesInFlight >= 1 else { throw ConfigurationError(field: "schedule_bytes_in_flight", reason: "must be at least 1") }
    guard resultBytesInFlightPerExecutor >= 1 else {
      throw ConfigurationError(field: "result_bytes_in_flight_per_executor", reason: "must be at least 1")
    }
    if let finishedTaskRetentionMicros { try positive(finishedTaskRetentionMicros, "finished_task_retention") }
    if let runHistoryRetentionMicros { try positive(runHistoryRetentionMicros, "run_history_retention") }
    guard deletedTaskRetentionMicros >= 0 else { throw ConfigurationError(field: "deleted_task_retention", reason: "must not be negative") }
    try positive(purgeIntervalMicros, "purge_interval")
    guard purgeBatch >= 1 else { throw ConfigurationError(field: "purge_batch", reason: "must be at least 1") }
    if let advertiseAddress, HostPort.parseDialable(advertiseAddress) == nil {
      throw ConfigurationError(field: "advertise", reason: "\"\(advertiseAddress)\" is not HOST:PORT with a host and a port from 1 to 65535")
    }
    guard blobSweepBatch >= 0 else { throw ConfigurationError(field: "blob_sweep_batch", reason: "must not be negative") }
  }
}

/// A configuration value is wrong; names the field.
public struct ConfigurationError: Error, Sendable, CustomStringConvertible {
  /// The field.
  public var field: String
  /// Why.
  public var reason: String
  public var description: String { "\(field): \(reason)" }
}
