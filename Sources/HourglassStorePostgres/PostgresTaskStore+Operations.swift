import Foundation
import HourglassCore
import HourglassStore
import Logging
import NIOCore
import PostgresNIO

extension PostgresTaskStore {
  static let taskColumns = """
    id, owner, name, operator, blob_digest, arguments, time_zone, schedule_spec, recurring,
    priority, max_attempts, timeout_us, state, partition, next_run_us, due_us, last_run_us,
    last_run_state, version, created_us, runs_completed
    """

  static let runColumns = """
    task_id, scheduled_us, attempt, state, lease_owner, lease_expires_us, fence, started_us,
    finished_us, retry_at_us, exit_status, output_tail, error
    """

  static func bytes(_ buffer: ByteBuffer?) -> [UInt8]? {
    buffer.map { Array($0.readableBytesView) }
  }

  static func taskRecord(_ row: PostgresRow) throws -> TaskRecord {
    let r = row.makeRandomAccess()
    let state = try r[12].decode(String.self)
    let lastState = try r[17].decode(String?.self)
    return TaskRecord(
      id: TaskID(uuid: try r[0].decode(UUID.self)), owner: try r[1].decode(String.self),
      name: try r[2].decode(String.self), operatorName: try r[3].decode(String.self),
      blobDigest: bytes(try r[4].decode(ByteBuffer?.self)).flatMap { BlobDigest(bytes: $0) },
      arguments: decodeArguments(try r[5].decode(String.self)),
      timeZone: try r[6].decode(String.self),
      scheduleSpec: bytes(try r[7].decode(ByteBuffer.self)) ?? [],
      recurring: try r[8].decode(Bool.self), priority: try r[9].decode(Int32.self),
      maxAttempts: try r[10].decode(Int32.self), timeoutMicros: try r[11].decode(Int64.self),
      state: TaskState(rawValue: state) ?? .dead,
      partition: Partition(rawValue: try r[13].decode(Int32.self)),
      nextRunMicros: try r[14].decode(Int64?.self), dueMicros: try r[15].decode(Int64?.self),
      lastRunMicros: try r[16].decode(Int64?.self),
      lastRunState: lastState.flatMap(RunState.init(rawValue:)),
      version: try r[18].decode(Int64.self), createdAtMicros: try r[19].decode(Int64.self),
      runsCompleted: try r[20].decode(Int64.self))
  }

  static func runRecord(_ row: PostgresRow) throws -> RunRecord {
    let r = row.makeRandomAccess()
    let state = try r[3].decode(String.self)
    return RunRecord(
      id: RunID(
        taskID: TaskID(uuid: try r[0].decode(UUID.self)), scheduledMicros: try r[1].decode(Int64.self)),
      attempt: try r[2].decode(Int32.self), state: RunState(rawValue: state) ?? .dead,
      leaseOwner: try r[4].decode(String?.self), leaseExpiresMicros: try r[5].decode(Int64?.self),
      fence: Fence(rawValue: UInt64(try r[6].decode(Int64.self))),
      startedMicros: try r[7].decode(Int64?.self), finishedMicros: try r[8].decode(Int64?.self),
      retryAtMicros: try r[9].decode(Int64?.self), exitStatus: try r[10].decode(Int32?.self),
      outputTail: bytes(try r[11].decode(ByteBuffer.self)) ?? [],
      error: try r[12].decode(String?.self))
  }

  func rows(_ query: PostgresQuery) async throws -> [PostgresRow] {
    do {
      return try await client.query(query, logger: logger).collect()
    } catch {
      throw Self.mapError(error)
    }
  }

  /// Reads the rows of `query` one at a time, as they arrive, until `body` returns false; the
  /// rest are not decoded. The server still sends them (up to the query's `LIMIT`) and
  /// postgres-nio drains them before the connection serves its next query, holding at most its
  /// buffer of them at a time. Pages by size are cut on the server first (``readPage``).
  func forEachRow(_ query: PostgresQuery, _ body: (PostgresRow) throws -> Bool) async throws {
    do {
      for try await row in try await client.query(query, logger: logger) {
        guard try body(row) else { break }
      }
    } catch let error as TaskStoreError {
      throw error
    } catch {
      throw Self.mapError(error)
    }
  }

  // MARK: Reads

  public func task(id: TaskID, owner: String) async throws -> TaskRecord? {
    try await rows(
      "SELECT \(unescaped: Self.taskColumns) FROM tasks WHERE id = \(id.uuid) AND owner = \(owner) AND state <> 'deleted'"
    ).first.map(Self.taskRecord)
  }

  public func taskID(idempotencyKey key: String, owner: String) async throws -> TaskID? {
    guard let row = try await rows("SELECT id FROM tasks WHERE owner = \(owner) AND idempotency_key = \(key)").first else {
      return nil
    }
    return TaskID(uuid: try row.decode(UUID.self))
  }

  public func dispatchRecord(taskID: TaskID) async throws -> TaskRecord? {
    try await rows(
      "SELECT \(unescaped: Self.taskColumns) FROM tasks WHERE id = \(taskID.uuid) AND state <> 'deleted'"
    ).first.map(Self.taskRecord)
  }

  public func dispatchRecords(taskIDs: [TaskID]) async throws -> [TaskID: TaskRecord] {
    if taskIDs.isEmpty { return [:] }
    var records: [TaskID: TaskRecord] = [:]
    for row in try await rows(
      """
      SELECT \(unescaped: Self.taskColumns) FROM tasks
      WHERE id = ANY(\(taskIDs.map(\.uuid))::uuid[]) AND state <> 'deleted'
      """)
    {
      let record = try Self.taskRecord(row)
      records[record.id] = record
    }
    return records
  }

  public func listTasks(owner: String, query: TaskListQuery) async throws -> TaskPage {
    try await taskPage(owner: owner, query: query).page
  }

  /// `listTasks`, and how many rows the server sent for it (what the tests check the server's
  /// cut by).
  func taskPage(owner: String, query: TaskListQuery) async throws -> (page: TaskPage, rowsSent: Int) {
    guard query.limit > 0 else { throw TaskStoreError.invalidArgument("limit must be positive") }
    let states = (query.states ?? Set(TaskState.allCases.filter { $0 != .deleted }))
      .map(\.rawValue).sorted()
    if states.isEmpty { return (TaskPage(tasks: [], nextCursor: nil), 0) }
    // Every task id is a version-7 UUID, above the nil UUID: one query serves the first page too.
    let after = query.after?.uuid ?? UUID(uuid: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    var page = PageBuilder<TaskRecord>(limit: query.limit, maxBytes: query.maxBytes, size: \.listingBytes)
    let rowsSent = try await readPage(
      &page, cutFlagColumn: 21,
      """
      WITH page AS MATERIALIZED (
        SELECT id, \(unescaped: Self.serverWeight(["name", "time_zone", "schedule_spec", "arguments"])) AS weight
        FROM tasks WHERE owner = \(owner) AND state = ANY(\(states)::text[]) AND id > \(after)
        ORDER BY id LIMIT \(Int64(query.limit) + 1)
      ), weighed AS (
        SELECT id, coalesce(sum(weight) OVER (ORDER BY id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)
          <= \(Self.serverBound(query.maxBytes)) AS kept
        FROM page
      )
      SELECT \(unescaped: Self.taskColumns), EXISTS (SELECT 1 FROM weighed WHERE NOT kept) FROM tasks
      WHERE id IN (SELECT id FROM weighed WHERE kept)
      ORDER BY id
      """, decode: Self.taskRecord)
    return (TaskPage(tasks: page.records, nextCursor: page.hasMore ? page.records.last?.id : nil), rowsSent)
  }

  /// What the server weighs a row by when it cuts a page by size: 512 plus the bytes of the
  /// `columns` it holds, read from each value's header (`octet_length` does not detoast). It
  /// follows `listingBytes` (which counts decoded values) closely, not exactly; the page's cut
  /// here, by `listingBytes`, is the one that counts.
  static func serverWeight(_ columns: [String]) -> String {
    (["512::bigint"] + columns.map { "coalesce(octet_length(\($0)), 0)" }).joined(separator: " + ")
  }

  /// A page's `maxBytes` as the server compares it: no bound for nil, and never below zero, so
  /// the first row is always sent (a page always holds its first record).
  static func serverBound(_ maxBytes: Int?) -> Int64 {
    Int64(max(maxBytes ?? Int.max, 0))
  }

  /// Reads one page: `query` selects the records of a page the server cut by size (by
  /// ``serverWeight(_:)``, at most `limit + 1` rows, every row up to and including the first
  /// whose earlier rows reach `maxBytes`), each row ending at `cutFlagColumn` with whether
  /// the server left rows out. Rows go to `page` until it is full; if the server cut, the page
  /// has more, even where `page` itself took every row sent. So a page by size costs the wire
  /// about its own size, not `limit` rows of any size. Returns the rows the server sent.
  func readPage<Record>(
    _ page: inout PageBuilder<Record>, cutFlagColumn: Int, _ query: PostgresQuery,
    decode: (PostgresRow) throws -> Record
  ) async throws -> Int {
    var rowsSent = 0
    var serverCut = false
    try await forEachRow(query) { row in
      rowsSent += 1
      if rowsSent == 1 { serverCut = try row.makeRandomAccess()[cutFlagColumn].decode(Bool.self) }
      return try page.take(decoding: { try decode(row) })
    }
    if serverCut { page.noteMoreFollow() }
    return rowsSent
  }

  public func firstDueBucket(partition: Partition, atOrAfter bucket: HourBucket) async throws -> HourBucket? {
    do {
      // min() over the partial due index's leading columns: one index probe.
      let rows = try await client.query(
        """
        SELECT min(due_bucket) FROM tasks
        WHERE state = 'active' AND partition = \(partition.rawValue) AND due_bucket >= \(bucket.rawValue)
        """, logger: logger)
      for try await first in rows.decode(Int64?.self) { return first.map(HourBucket.init(rawValue:)) }
      return nil
    } catch {
      throw Self.mapError(error)
    }
  }

  public func loadDue(
    shard: ShardID, from: Int64, until: Int64, after: DueCursor?, limit: Int
  ) async throws
    -> [DueEntry]
  {
    var entries: [DueEntry] = []
    do {
      let sequence: PostgresRowSequence
      if let after {
        // uuid compares as its 16 bytes, the same order as TaskID and the SQLite store's blobs.
        sequence = try await client.query(
          """
          SELECT id, next_run_us, due_us, priority FROM tasks
          WHERE state = 'active' AND partition = \(shard.partition.rawValue)
            AND due_bucket = \(shard.bucket.rawValue) AND due_us >= \(from) AND due_us < \(until)
            AND (due_us, id) > (\(after.dueMicros), \(after.taskID.uuid))
          ORDER BY due_us, id LIMIT \(Int64(limit))
          """, logger: logger)
      } else {
        sequence = try await client.query(
          """
          SELECT id, next_run_us, due_us, priority FROM tasks
          WHERE state = 'active' AND partition = \(shard.partition.rawValue)
            AND due_bucket = \(shard.bucket.rawValue) AND due_us >= \(from) AND due_us < \(until)
          ORDER BY due_us, id LIMIT \(Int64(limit))
          """, logger: logger)
      }
      for try await (id, scheduled, due, priority) in sequence.decode((UUID, Int64, Int64, Int32).self) {
        entries.append(
          DueEntry(taskID: TaskID(uuid: id), scheduledMicros: scheduled, dueMicros: due, priority: priority))
      }
    } catch {
      throw Self.mapError(error)
    }
    return entries
  }

  public func runPage(taskID: TaskID, owner: String, before: Int64?, limit: Int, maxBytes: Int?) async throws -> RunPage {
    guard limit > 0 else { throw TaskStoreError.invalidArgument("limit must be positive") }
    guard
      try await scalar(
        "SELECT 1::integer FROM tasks WHERE id = \(taskID.uuid) AND owner = \(owner) AND state <> 'deleted'",
        as: Int32.self) != nil
    else { throw TaskStoreError.taskNotFound(taskID) }
    var page = PageBuilder<RunRecord>(limit: limit, maxBytes: maxBytes, size: \.listingBytes)
    _ = try await readPage(
      &page, cutFlagColumn: 13,
      """
      WITH page AS MATERIALIZED (
        SELECT scheduled_us, \(unescaped: Self.serverWeight(["output_tail", "error", "lease_owner"])) AS weight
        FROM runs WHERE task_id = \(taskID.uuid) AND scheduled_us < \(before ?? Int64.max)
        ORDER BY scheduled_us DESC LIMIT \(Int64(limit) + 1)
      ), weighed AS (
        SELECT scheduled_us,
          coalesce(sum(weight) OVER (ORDER BY scheduled_us DESC ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)
            <= \(Self.serverBound(maxBytes)) AS kept
        FROM page
      )
      SELECT \(unescaped: Self.runColumns), EXISTS (SELECT 1 FROM weighed WHERE NOT kept) FROM runs
      WHERE task_id = \(taskID.uuid) AND scheduled_us IN (SELECT scheduled_us FROM weighed WHERE kept)
      ORDER BY scheduled_us DESC
      """, decode: Self.runRecord)
    return RunPage(runs: page.records, hasMore: page.hasMore)
  }

  public func blob(_ digest: BlobDigest) async throws -> [UInt8]? {
    Self.bytes(
      try await scalar(
        "SELECT content FROM blobs WHERE digest = \(Self.buffer(digest.bytes))", as: ByteBuffer.self))
  }

  public func counts() async throws -> StoreCounts {
    var tasks: [TaskState: Int] = [:]
    for row in try await rows("SELECT state, count(*) FROM tasks GROUP BY state") {
      let (state, count) = try row.decode((String, Int64).self)
      if let state = TaskState(rawValue: state) { tasks[state] = Int(count) }
    }
    var runs: [RunState: Int] = [:]
    for row in try await rows("SELECT state, count(*) FROM runs GROUP BY state") {
      let (state, count) = try row.decode((String, Int64).self)
      if let state = RunState(rawValue: state) { runs[state] = Int(count) }
    }
    return StoreCounts(tasks: tasks, runs: runs)
  }

  // MARK: Writes

  public func deleteTask(
    id: TaskID, owner: String, cancelRunning: Bool, now: Int64
  ) async throws
    -> DeleteOutcome
  {
    try await transaction { [logger] connection in
      let rows = try await connection.query(
        """
        SELECT state, next_run_us FROM tasks
        WHERE id = \(id.uuid) AND owner = \(owner) AND state <> 'deleted' FOR UPDATE
        """, logger: logger
      ).collect()
      guard let row = rows.first else { return .notFound }
      let (state, nextRun) = try row.decode((String, Int64?).self)
      // Every leased run: the task's current one, and with overlap `allow` those detached from it.
      var running: [RunID] = []
      for try await scheduled in try await connection.query(
        "SELECT scheduled_us FROM runs WHERE task_id = \(id.uuid) AND state = 'leased' ORDER BY scheduled_us", logger: logger
      ).decode(Int64.self) {
        running.append(RunID(taskID: id, scheduledMicros: scheduled))
      }
      if state == TaskState.running.rawValue, let nextRun, !running.contains(where: { $0.scheduledMicros == nextRun }) {
        running.append(RunID(taskID: id, scheduledMicros: nextRun))
      }
      var outcome = DeleteOutcome.deleted
      if let first = running.first {
        if !cancelRunning { return .runInProgress(first) }
        outcome = .deletedCancellingRuns(running)
      }
      try await connection.query(
        """
        UPDATE runs SET state = 'cancelled', finished_us = \(now)
        WHERE task_id = \(id.uuid) AND state IN ('pending', 'leased', 'retrying')
        """, logger: logger)
      try await connection.query(
        """
        UPDATE tasks SET state = 'deleted', deleted_us = \(now), due_us = NULL, due_bucket = NULL,
          version = version + 1
        WHERE id = \(id.uuid)
        """, logger: logger)
      return outcome
    }
  }

  public func purgeDeleted(before: Int64, limit: Int) async throws -> PurgeResult {
    try await purge(
      selecting: """
        SELECT id FROM tasks WHERE state = 'deleted' AND deleted_us < \(before)
        ORDER BY deleted_us LIMIT \(Int64(limit)) FOR UPDATE SKIP LOCKED
        """)
  }

  public func purgeFinished(before: Int64, limit: Int) async throws -> PurgeResult {
    // The expression is the `tasks_finished` index's, so the index serves the range and order.
    // A run still leased (overlap `allow`: a detached run outlasting its task's last one) keeps
    // its task until its result is recorded.
    try await purge(
      selecting: """
        SELECT id FROM tasks
        WHERE state IN ('completed', 'dead') AND coalesce(last_run_us, created_us) < \(before)
          AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.task_id = tasks.id AND runs.state = 'leased')
        ORDER BY coalesce(last_run_us, created_us) LIMIT \(Int64(limit)) FOR UPDATE SKIP LOCKED
        """)
  }

  /// Removes the tasks `query` selects (and locks), with their runs (and keys, in their rows), in one
  /// transaction, and then in a second one the blobs they leave without a task. Rows another
  /// coordinator's purge has locked are skipped, not waited for. The blobs get a transaction of
  /// their own because their locks must come first in it (``removeUnreferencedBlobs(_:)``); a
  /// crash between the two leaves blobs for ``sweepBlobs(after:limit:)``.
  private func purge(selecting query: PostgresQuery) async throws -> PurgeResult {
    let (count, digests) = try await transaction { [logger] connection in
      var ids: [UUID] = []
      for try await id in try await connection.query(query, logger: logger).decode(UUID.self) {
        ids.append(id)
      }
      if ids.isEmpty { return (0, [BlobDigest]()) }
      try await connection.query("DELETE FROM runs WHERE task_id = ANY(\(ids)::uuid[])", logger: logger)
      var digests = Set<BlobDigest>()
      for try await digest in try await connection.query(
        "DELETE FROM tasks WHERE id = ANY(\(ids)::uuid[]) RETURNING blob_digest", logger: logger
      ).decode(ByteBuffer?.self) {
        if let digest, let parsed = BlobDigest(bytes: digest.readableBytesView) { digests.insert(parsed) }
      }
      return (ids.count, Array(digests))
    }
    return PurgeResult(tasks: count, blobs: try await removeUnreferencedBlobs(digests))
  }

  /// Removes, of `digests`, the blobs no task refers to; returns how many.
  ///
  /// An insert storing a task with one of these blobs may be under way in another transaction,
  /// which this one's snapshot cannot see. So each blob's advisory lock is taken first, in
  /// exclusive mode, and the insert takes the same locks in shared mode before it stores its
  /// blobs (``insertBatch(_:partitions:connection:logger:)``): the removal waits for such an
  /// insert to commit, and its `NOT EXISTS`, a statement after the locks, then sees the new
  /// task. An insert that comes later finds the blob gone and stores it again. Both take their
  /// locks in key order, so they cannot deadlock.
  ///
  /// Only blobs that look unused at the start are locked: a blob that many tasks share is named
  /// by nearly every purge, and locking it each time would hold up every insert storing it. A
  /// blob that looked used but whose last task another purge was removing at that moment is
  /// left for ``sweepBlobs(after:limit:)``.
  func removeUnreferencedBlobs(_ digests: [BlobDigest]) async throws -> Int {
    if digests.isEmpty { return 0 }
    let buffers = digests.map { Self.buffer($0.bytes) }
    return try await transaction { [logger] connection in
      var candidates: [ByteBuffer] = []
      for try await digest in try await connection.query(
        """
        SELECT d FROM unnest(\(buffers)::bytea[]) AS d
        WHERE NOT EXISTS (SELECT 1 FROM tasks WHERE tasks.blob_digest = d)
        """, logger: logger
      ).decode(ByteBuffer.self) {
        candidates.append(digest)
      }
      if candidates.isEmpty { return 0 }
      let keys = Self.blobLockKeys(candidates.compactMap { BlobDigest(bytes: $0.readableBytesView) })
      try await connection.query(
        "SELECT pg_advisory_xact_lock(k) FROM unnest(\(keys)::bigint[]) AS k", logger: logger)
      var removed = 0
      for try await _ in try await connection.query(
        """
        DELETE FROM blobs WHERE digest = ANY(\(candidates)::bytea[])
          AND NOT EXISTS (SELECT 1 FROM tasks WHERE tasks.blob_digest = blobs.digest)
        RETURNING 1
        """, logger: logger)
      {
        removed += 1
      }
      return removed
    }
  }

  /// The advisory lock keys of `digests`: each digest's first eight bytes, sorted and without
  /// repeats, so that every transaction takes its locks in one order. Two digests sharing a key
  /// only make one wait for the other.
  static func blobLockKeys(_ digests: some Sequence<BlobDigest>) -> [Int64] {
    let keys = Set(digests.map { digest in digest.bytes.prefix(8).reduce(Int64(0)) { $0 << 8 | Int64($1) } })
    return keys.sorted()
  }

  public func sweepBlobs(after: BlobDigest?, limit: Int) async throws -> BlobSweep {
    // No locks here: the removal checks each blob again, under its lock.
    let examined = try await rows(
      "SELECT digest FROM blobs WHERE digest > \(Self.buffer(after?.bytes ?? [])) ORDER BY digest LIMIT \(Int64(limit))"
    ).compactMap { BlobDigest(bytes: try $0.decode(ByteBuffer.self).readableBytesView) }
    let removed = try await removeUnreferencedBlobs(examined)
    return BlobSweep(examined: examined.count, removed: removed, next: examined.count < limit ? nil : examined.last)
  }

  public func createLease(
    taskID: TaskID, owner: String, now: Int64, expiresAt: Int64
  ) async throws
    -> Lease
  {
    guard expiresAt > now else { throw TaskStoreError.invalidArgument("expiresAt must be after now") }
    return try await transaction { [logger] connection in
      let id = taskID.uuid
      guard
        let task = try await connection.query(
          "SELECT state, next_run_us FROM tasks WHERE id = \(id) FOR UPDATE", logger: logger
        ).collect().first
      else { throw TaskStoreError.taskNotFound(taskID) }
      let (state, nextRun) = try task.decode((String, Int64?).self)
      guard state == TaskState.active.rawValue, let scheduled = nextRun else {
        throw TaskStoreError.notDispatchable(taskID)
      }
      if let run = try await connection.query(
        "SELECT state FROM runs WHERE task_id = \(id) AND scheduled_us = \(scheduled)", logger: logger
      ).collect().first {
        let runState = try run.decode(String.self)
        if runState != RunState.pending.rawValue && runState != RunState.retrying.rawValue {
          throw TaskStoreError.notDispatchable(taskID)
        }
      }
      let rows = try await connection.query(
        """
        INSERT INTO runs (task_id, scheduled_us, attempt, state, lease_owner, lease_expires_us,
          fence, started_us)
        VALUES (\(id), \(scheduled), 1, 'leased', \(owner), \(expiresAt), nextval('fence_seq'), GREATEST(\(now), \(scheduled)))
        ON CONFLICT (task_id, scheduled_us) DO UPDATE SET
          attempt = runs.attempt + 1, state = 'leased', lease_owner = excluded.lease_owner,
          lease_expires_us = excluded.lease_expires_us, fence = excluded.fence,
          started_us = excluded.started_us, retry_at_us = NULL, finished_us = NULL
        RETURNING attempt, fence
        """, logger: logger
      ).collect()
      guard let row = rows.first else { throw TaskStoreError.io("lease insert returned nothing") }
      let (attempt, fence) = try row.decode((Int32, Int64).self)
      try await connection.query(
        "UPDATE tasks SET state = 'running', version = version + 1 WHERE id = \(id)", logger: logger)
      return Lease(
        runID: RunID(taskID: taskID, scheduledMicros: scheduled), owner: owner,
        fence: Fence(rawValue: UInt64(fence)), attempt: attempt, grantedAtMicros: now,
        expiresAtMicros: expiresAt)
    }
  }

  /// Leases a batch in one transaction with three statements whatever its size: a compare-and-set
  /// of every task (active, next run as requested, that run not past pending or retrying; tasks
  /// of overlap-allowed requests move on to their next run instead of to running), then one
  /// upsert of the won runs, each with its own `nextval('fence_seq')`. Row locks make a task
  /// that two coordinators race for go to one of them; the other's compare-and-set re-reads the
  /// row after the winner commits and fails.
  public func createLeases(_ requests: [LeaseRequest], now: Int64) async throws -> [Lease?] {
    try await createLeases(requests, now: now, fence: nil).leases
  }

  /// Both forms of `createLeases`: with a fence, only the requests whose task's partition the
  /// fence's coordinator still holds with the fence's epoch are considered; the others'
  /// partitions are returned as `unheld`.
  func createLeases(
    _ requests: [LeaseRequest], now: Int64, fence: PartitionFence?
  ) async throws -> (leases: [Lease?], unheld: Set<Partition>) {
    if requests.isEmpty { return ([], []) }
    for request in requests where request.expiresAt <= now {
      throw TaskStoreError.invalidArgument("expiresAt must be after now")
    }
    return try await transaction { [logger, partitionCount] connection in
      // A task is leased at most once per batch: a repeated request gets nil, as it would from a
      // second batch.
      var seen = Set<TaskID>()
      var first = requests.map { seen.insert($0.taskID).inserted }
      var unheld = Set<Partition>()
      if let fence {
        // The partition leases are read with a share lock: a coordinator taking one over waits
        // for this transaction, and leases created here belong to the epoch checked here.
        // Only the partitions this batch touches are read (and share-locked).
        let touched = Set(requests.map { Partition(taskID: $0.taskID, count: partitionCount) })
        let batchFence = PartitionFence(owner: fence.owner, epochs: fence.epochs.filter { touched.contains($0.key) })
        let held = try await Self.heldPartitions(batchFence, now: now, connection: connection, logger: logger)
        for index in requests.indices {
          let partition = Partition(taskID: requests[index].taskID, count: partitionCount)
          if !held.contains(partition.rawValue) {
            first[index] = false
            unheld.insert(partition)
          }
        }
      }
      return (try await Self.createLeases(requests, first: first, now: now, connection: connection, logger: logger), unheld)
    }
  }

  /// The leasing itself, inside the caller's transaction, for the requests marked `first`.
  static func createLeases(
    _ requests: [LeaseRequest], first: [Bool], now: Int64, connection: PostgresConnection, logger: Logger
  ) async throws -> [Lease?] {
    let plain = requests.indices.filter { first[$0] && requests[$0].advanceTo == nil }
    let moving = requests.indices.filter { first[$0] && requests[$0].advanceTo != nil }
    let notPast = """
      NOT EXISTS (SELECT 1 FROM runs WHERE runs.task_id = t.id AND runs.scheduled_us = t.next_run_us
        AND runs.state NOT IN ('pending', 'retrying'))
      """
    do {
      // Tasks are locked in id order by every batch path, so concurrent batches wait for each
      // other instead of deadlocking.
      let all = requests.indices.filter { first[$0] }.map { requests[$0].taskID.uuid }
      if all.isEmpty { return Array(repeating: nil, count: requests.count) }
      try await connection.query(
        "SELECT 1 FROM tasks WHERE id = ANY(\(all)::uuid[]) ORDER BY id FOR UPDATE", logger: logger)
      var won = Set<UUID>()
      if !plain.isEmpty {
        let ids = plain.map { requests[$0].taskID.uuid }
        let runs = plain.map { requests[$0].scheduledMicros }
        for try await id in try await connection.query(
          """
          UPDATE tasks t SET state = 'running', version = t.version + 1
          FROM unnest(\(ids)::uuid[], \(runs)::bigint[]) AS r(id, scheduled)
          WHERE t.id = r.id AND t.state = 'active' AND t.next_run_us = r.scheduled
            AND \(unescaped: notPast)
          RETURNING t.id
          """, logger: logger
        ).decode(UUID.self) {
          won.insert(id)
        }
      }
      if !moving.isEmpty {
        let ids = moving.map { requests[$0].taskID.uuid }
        let runs = moving.map { requests[$0].scheduledMicros }
        let next = moving.map { requests[$0].advanceTo! }
        let buckets = next.map { HourBucket(containing: $0).rawValue }
        for try await id in try await connection.query(
          """
          UPDATE tasks t SET next_run_us = r.next, due_us = r.next, due_bucket = r.bucket,
            version = t.version + 1
          FROM unnest(\(ids)::uuid[], \(runs)::bigint[], \(next)::bigint[], \(buckets)::bigint[])
            AS r(id, scheduled, next, bucket)
          WHERE t.id = r.id AND t.state = 'active' AND t.next_run_us = r.scheduled
            AND \(unescaped: notPast)
          RETURNING t.id
          """, logger: logger
        ).decode(UUID.self) {
          won.insert(id)
        }
      }
      let leased = requests.indices.filter { first[$0] && won.contains(requests[$0].taskID.uuid) }
      if leased.isEmpty { return Array(repeating: nil, count: requests.count) }
      let ids = leased.map { requests[$0].taskID.uuid }
      let runs = leased.map { requests[$0].scheduledMicros }
      let owners = leased.map { requests[$0].owner }
      let expiries = leased.map { requests[$0].expiresAt }
      var granted: [UUID: (attempt: Int32, fence: Int64)] = [:]
      for try await (id, attempt, fence) in try await connection.query(
        """
        INSERT INTO runs AS runs (task_id, scheduled_us, attempt, state, lease_owner,
          lease_expires_us, fence, started_us)
        SELECT id, scheduled, 1, 'leased', owner, expires, nextval('fence_seq'), GREATEST(\(now), scheduled)
        FROM unnest(\(ids)::uuid[], \(runs)::bigint[], \(owners)::text[], \(expiries)::bigint[])
          WITH ORDINALITY AS r(id, scheduled, owner, expires, ordinal)
        ORDER BY ordinal
        ON CONFLICT (task_id, scheduled_us) DO UPDATE SET
          attempt = runs.attempt + 1, state = 'leased', lease_owner = excluded.lease_owner,
          lease_expires_us = excluded.lease_expires_us, fence = excluded.fence,
          started_us = excluded.started_us, retry_at_us = NULL, finished_us = NULL
        RETURNING task_id, attempt, fence
        """, logger: logger
      ).decode((UUID, Int32, Int64).self) {
        granted[id] = (attempt, fence)
      }
      return requests.indices.map { index -> Lease? in
        let request = requests[index]
        guard first[index], let grant = granted[request.taskID.uuid] else { return nil }
        return Lease(
          runID: RunID(taskID: request.taskID, scheduledMicros: request.scheduledMicros),
          owner: request.owner, fence: Fence(rawValue: UInt64(grant.fence)), attempt: grant.attempt,
          grantedAtMicros: now, expiresAtMicros: request.expiresAt)
      }
    }
  }

  public func renewLease(runID: RunID, fence: Fence, expiresAt: Int64) async throws {
    let updated = try await rows(
      """
      UPDATE runs SET lease_expires_us = \(expiresAt)
      WHERE task_id = \(runID.taskID.uuid) AND scheduled_us = \(runID.scheduledMicros)
        AND fence = \(fence.storedValue) AND state = 'leased'
      RETURNING 1
      """)
    if updated.isEmpty { throw TaskStoreError.staleFence(runID) }
  }

  /// Renews a batch with one statement: `UPDATE runs … FROM unnest(…)`, each row its own
  /// compare-and-set on the fence. A run named twice with one fence is renewed once, to the later
  /// expiry, and both items answer true.
  public func renewLeases(_ items: [LeaseRenewalRequest]) async throws -> [Bool] {
    if items.isEmpty { return [] }
    struct Key: Hashable {
      var run: RunID
      var fence: Fence
    }
    var expiry: [Key: Int64] = [:]
    for item in items {
      let key = Key(run: item.runID, fence: item.fence)
      expiry[key] = max(expiry[key] ?? .min, item.expiresAt)
    }
    let keys = Array(expiry.keys)
    var renewed = Set<Key>()
    for row in try await rows(
      """
      UPDATE runs SET lease_expires_us = u.expires
      FROM unnest(\(keys.map(\.run.taskID.uuid))::uuid[], \(keys.map(\.run.scheduledMicros))::bigint[],
        \(keys.map { $0.fence.storedValue })::bigint[], \(keys.map { expiry[$0]! })::bigint[])
        AS u(id, scheduled, fence, expires)
      WHERE runs.task_id = u.id AND runs.scheduled_us = u.scheduled AND runs.fence = u.fence
        AND runs.state = 'leased'
      RETURNING runs.task_id, runs.scheduled_us, runs.fence
      """)
    {
      let (id, scheduled, fence) = try row.decode((UUID, Int64, Int64).self)
      renewed.insert(
        Key(run: RunID(taskID: TaskID(uuid: id), scheduledMicros: scheduled), fence: Fence(rawValue: UInt64(fence))))
    }
    return items.map { renewed.contains(Key(run: $0.runID, fence: $0.fence)) }
  }

  public func recordResult(
    runID: RunID, fence: Fence, result: RunResult
  ) async throws
    -> RecordOutcome
  {
    try await recordResults([ResultRecord(runID: runID, fence: fence, result: result)])[0]
  }

  /// Records a batch in one transaction, set-based: one commit (one WAL flush) and a handful of
  /// statements for the whole batch, however large, each result still its own compare-and-set
  /// on its run's fence. Invalid results are refused before anything is written.
  ///
  /// A batch runs in passes that each hold at most one result per task, so that every statement
  /// touches a row once; a task's later results (a result sent twice, two detached runs of one
  /// task) go to the next pass, in their order, and see the first one's effect exactly as one at
  /// a time would. Each pass first locks its tasks in id order, as ``createLeases(_:now:)`` does,
  /// so concurrent batches wait for each other instead of deadlocking.
  public func recordResults(_ items: [ResultRecord]) async throws -> [RecordOutcome] {
    if items.isEmpty { return [] }
    let states = try items.map { try $0.result.recordedRunState() }
    return try await transaction { [logger] connection in
      var outcomes = [RecordOutcome](repeating: .staleFence, count: items.count)
      var pending = Array(items.indices)
      while !pending.isEmpty {
        var inPass = Set<TaskID>()
        var pass: [Int] = []
        var later: [Int] = []
        for index in pending {
          if inPass.insert(items[index].runID.taskID).inserted { pass.append(index) } else { later.append(index) }
        }
        for index in try await Self.recordPass(pass.map { (items[$0], states[$0]) }, on: connection, logger: logger) {
          outcomes[pass[index]] = .recorded
        }
        pending = later
      }
      return outcomes
    }
  }

  /// One pass of ``recordResults(_:)``: results of distinct tasks. Returns the positions (in
  /// `batch`) of the recorded ones.
  static func recordPass(
    _ batch: [(item: ResultRecord, runState: RunState)], on connection: PostgresConnection, logger: Logger
  ) async throws -> [Int] {
    let ids = batch.map(\.item.runID.taskID.uuid)
    try await connection.query(
      "SELECT 1 FROM tasks WHERE id = ANY(\(ids)::uuid[]) ORDER BY id FOR UPDATE", logger: logger)
    // postgres-nio encodes no optional array elements: absent values travel as a flag or as a
    // sentinel that NULLIF turns back into NULL.
    let absent = Int64.min
    let runs = batch.map(\.item.runID.scheduledMicros)
    let fences = batch.map { $0.item.fence.storedValue }
    let runStates = batch.map(\.runState.rawValue)
    let finished = batch.map(\.item.result.finishedMicros)
    let started = batch.map { $0.item.result.startedMicros ?? absent }
    let exits = batch.map { $0.item.result.exitStatus.map(Int64.init) ?? absent }
    let tails = batch.map { ByteBuffer(bytes: $0.item.result.outputTail) }
    let hasError = batch.map { $0.item.result.error != nil }
    let errors = batch.map { $0.item.result.error ?? "" }
    let retryAt = batch.map { item -> Int64 in
      if case .retry(let at) = item.item.result.next { return at }
      return absent
    }
    var recorded = Set<UUID>()
    for try await id in try await connection.query(
      """
      UPDATE runs SET state = u.state, finished_us = u.finished,
        started_us = COALESCE(NULLIF(u.started, \(absent)), runs.started_us),
        exit_status = NULLIF(u.exit, \(absent))::integer, output_tail = u.tail,
        error = CASE WHEN u.has_error THEN u.error END, retry_at_us = NULLIF(u.retry_at, \(absent))
      FROM unnest(\(ids)::uuid[], \(runs)::bigint[], \(fences)::bigint[], \(runStates)::text[],
        \(finished)::bigint[], \(exits)::bigint[], \(tails)::bytea[], \(hasError)::boolean[],
        \(errors)::text[], \(retryAt)::bigint[], \(started)::bigint[])
        AS u(id, scheduled, fence, state, finished, exit, tail, has_error, error, retry_at, started)
      WHERE runs.task_id = u.id AND runs.scheduled_us = u.scheduled AND runs.fence = u.fence
        AND runs.state = 'leased'
      RETURNING runs.task_id
      """, logger: logger
    ).decode(UUID.self) {
      recorded.insert(id)
    }
    let positions = batch.indices.filter { recorded.contains(ids[$0]) }
    if positions.isEmpty { return [] }

    // The tasks of the recorded runs, one statement per kind of next step.
    var retry = TaskUpdateColumns()
    var reschedule = TaskUpdateColumns()
    var finish = TaskUpdateColumns()
    var runOnly = TaskUpdateColumns()
    for position in positions {
      let (item, runState) = batch[position]
      switch item.result.next {
      case .retry(let at): retry.add(item, runState, time: at)
      case .reschedule(let next): reschedule.add(item, runState, time: next)
      case .finish(let taskState): finish.add(item, runState, taskState: taskState)
      case .runOnly: runOnly.add(item, runState)
      }
    }
    if !retry.ids.isEmpty {
      try await connection.query(
        """
        UPDATE tasks SET state = 'active', due_us = u.at, due_bucket = u.bucket, version = version + 1
        FROM unnest(\(retry.ids)::uuid[], \(retry.times)::bigint[], \(retry.buckets)::bigint[]) AS u(id, at, bucket)
        WHERE tasks.id = u.id AND tasks.state = 'running'
        """, logger: logger)
    }
    if !reschedule.ids.isEmpty {
      try await connection.query(
        """
        UPDATE tasks SET state = 'active', next_run_us = u.next, due_us = u.next, due_bucket = u.bucket,
          last_run_us = u.last_run, last_run_state = u.last_state,
          runs_completed = runs_completed + u.completed, version = version + 1
        FROM unnest(\(reschedule.ids)::uuid[], \(reschedule.times)::bigint[], \(reschedule.buckets)::bigint[],
          \(reschedule.runs)::bigint[], \(reschedule.runStates)::text[], \(reschedule.completed)::bigint[])
          AS u(id, next, bucket, last_run, last_state, completed)
        WHERE tasks.id = u.id AND tasks.state = 'running'
        """, logger: logger)
    }
    if !finish.ids.isEmpty {
      try await connection.query(
        """
        UPDATE tasks SET state = u.task_state, next_run_us = NULL, due_us = NULL, due_bucket = NULL,
          last_run_us = u.last_run, last_run_state = u.last_state,
          runs_completed = runs_completed + u.completed, version = version + 1
        FROM unnest(\(finish.ids)::uuid[], \(finish.taskStates)::text[], \(finish.runs)::bigint[],
          \(finish.runStates)::text[], \(finish.completed)::bigint[])
          AS u(id, task_state, last_run, last_state, completed)
        WHERE tasks.id = u.id AND tasks.state = 'running'
        """, logger: logger)
    }
    if !runOnly.ids.isEmpty {
      // Detached runs: they count, but the last-run fields keep the latest run.
      try await connection.query(
        """
        UPDATE tasks SET runs_completed = runs_completed + u.completed, version = version + 1,
          last_run_state = CASE WHEN last_run_us IS NULL OR last_run_us <= u.run
            THEN u.state ELSE last_run_state END,
          last_run_us = CASE WHEN last_run_us IS NULL OR last_run_us <= u.run
            THEN u.run ELSE last_run_us END
        FROM unnest(\(runOnly.ids)::uuid[], \(runOnly.runs)::bigint[], \(runOnly.runStates)::text[],
          \(runOnly.completed)::bigint[])
          AS u(id, run, state, completed)
        WHERE tasks.id = u.id
        """, logger: logger)
    }
    let forgetting = positions.compactMap { position -> (UUID, Int64)? in
      batch[position].item.result.forgetRunsBeforeMicros.map { (ids[position], $0) }
    }
    if !forgetting.isEmpty {
      // Old finished runs of recurring tasks (their run-history retention), by primary key range.
      try await connection.query(
        """
        DELETE FROM runs USING unnest(\(forgetting.map(\.0))::uuid[], \(forgetting.map(\.1))::bigint[]) AS u(id, before)
        WHERE runs.task_id = u.id AND runs.scheduled_us < u.before
          AND runs.state IN \(unescaped: RunState.terminalSQLList)
        """, logger: logger)
    }
    return positions
  }

  /// The `unnest` columns of one kind of task update in ``recordPass(_:on:logger:)``: one row per
  /// recorded result, `times` for a retry or a next run, `taskStates` for a finish.
  struct TaskUpdateColumns {
    var ids: [UUID] = []
    var runs: [Int64] = []
    var runStates: [String] = []
    var completed: [Int64] = []
    var times: [Int64] = []
    var taskStates: [String] = []

    var buckets: [Int64] { times.map { HourBucket(containing: $0).rawValue } }

    mutating func add(_ item: ResultRecord, _ runState: RunState, time: Int64? = nil, taskState: TaskState? = nil) {
      ids.append(item.runID.taskID.uuid)
      runs.append(item.runID.scheduledMicros)
      runStates.append(runState.rawValue)
      completed.append(runState.countsAsCompleted ? 1 : 0)
      if let time { times.append(time) }
      if let taskState { taskStates.append(taskState.rawValue) }
    }
  }

  public func detachRun(_ runID: RunID, nextRunMicros: Int64) async throws -> Bool {
    let rows = try await rows(
      """
      UPDATE tasks SET state = 'active', next_run_us = \(nextRunMicros), due_us = \(nextRunMicros),
        due_bucket = \(HourBucket(containing: nextRunMicros).rawValue), version = version + 1
      WHERE id = \(runID.taskID.uuid) AND state = 'running' AND next_run_us = \(runID.scheduledMicros)
      RETURNING 1
      """)
    return !rows.isEmpty
  }

  public func recoverExpiredLeases(
    now: Int64, skewBound: Int64, limit: Int
  ) async throws
    -> [RunRecord]
  {
    try await recoverExpiredLeases(now: now, skewBound: skewBound, limit: limit, partitions: nil)
  }

  /// Both forms of `recoverExpiredLeases`: every partition's runs, or those of `partitions`.
  func recoverExpiredLeases(
    now: Int64, skewBound: Int64, limit: Int, partitions: [Partition]?
  ) async throws
    -> [RunRecord]
  {
    try await transaction { [logger] connection in
      var query: PostgresQuery = """
        SELECT \(unescaped: Self.runColumns) FROM runs
        WHERE state = 'leased' AND lease_expires_us < \(now - skewBound)
        ORDER BY lease_expires_us LIMIT \(Int64(limit)) FOR UPDATE SKIP LOCKED
        """
      if let partitions {
        let numbers = partitions.map(\.rawValue)
        query = """
          SELECT \(unescaped: Self.runColumns) FROM runs
          WHERE state = 'leased' AND lease_expires_us < \(now - skewBound)
            AND task_id IN (SELECT id FROM tasks WHERE partition = ANY(\(numbers)::integer[]))
          ORDER BY lease_expires_us LIMIT \(Int64(limit)) FOR UPDATE OF runs SKIP LOCKED
          """
      }
      let rows = try await connection.query(query, logger: logger).collect()
      var recovered: [RunRecord] = []
      for row in rows {
        var run = try Self.runRecord(row)
        let id = run.id.taskID.uuid
        let moved = try await connection.query(
          """
          UPDATE tasks SET state = 'active', due_us = \(now),
            due_bucket = \(HourBucket(containing: now).rawValue), version = version + 1
          WHERE id = \(id) AND state = 'running' AND next_run_us = \(run.id.scheduledMicros)
            AND max_attempts > \(run.attempt)
          RETURNING 1
          """, logger: logger
        ).collect()
        if moved.isEmpty,
          try await !connection.query(
            "SELECT 1 FROM tasks WHERE id = \(id) AND state = 'running' AND next_run_us = \(run.id.scheduledMicros)", logger: logger
          ).collect().isEmpty
        {
          // Its last allowed attempt: left leased, for the caller to record it dead.
          recovered.append(run)
          continue
        }
        if moved.isEmpty {
          // A run detached from its task (overlap allowed): not sent again; it ends as dead.
          try await connection.query(
            """
            UPDATE runs SET state = 'dead', finished_us = \(now),
              error = 'the lease expired; a run of an overlap-allowed task is not sent again'
            WHERE task_id = \(id) AND scheduled_us = \(run.id.scheduledMicros) AND state = 'leased'
            """, logger: logger)
          try await connection.query(
            "UPDATE tasks SET runs_completed = runs_completed + 1, version = version + 1 WHERE id = \(id)",
            logger: logger)
          continue
        }
        try await connection.query(
          """
          UPDATE runs SET state = 'pending'
          WHERE task_id = \(id) AND scheduled_us = \(run.id.scheduledMicros) AND state = 'leased'
          """, logger: logger)
        run.state = .pending
        recovered.append(run)
      }
      return recovered
    }
  }

  public func advance(
    taskID: TaskID, expectedVersion: Int64, nextRunMicros: Int64?, state: TaskState
  ) async throws -> Int64? {
    guard [.active, .paused, .completed].contains(state) else {
      throw TaskStoreError.invalidArgument("advance to \(state) is not allowed")
    }
    if state == .active && nextRunMicros == nil {
      throw TaskStoreError.invalidArgument("an active task needs a next run time")
    }
    return try await transaction { [logger] connection in
      let id = taskID.uuid
      guard
        let row = try await connection.query(
          """
          SELECT next_run_us FROM tasks
          WHERE id = \(id) AND version = \(expectedVersion)
            AND state IN ('active', 'paused', 'completed')
          FOR UPDATE
          """, logger: logger
        ).collect().first
      else { return nil }
      if let oldRun = try row.decode(Int64?.self), oldRun != nextRunMicros {
        try await connection.query(
          """
          UPDATE runs SET state = 'skipped'
          WHERE task_id = \(id) AND scheduled_us = \(oldRun) AND state IN ('pending', 'retrying')
          """, logger: logger)
      }
      let bucket = nextRunMicros.map { HourBucket(containing: $0).rawValue }
      for try await version in try await connection.query(
        """
        UPDATE tasks SET state = \(state.rawValue), next_run_us = \(nextRunMicros),
          due_us = \(nextRunMicros), due_bucket = \(bucket), version = version + 1
        WHERE id = \(id) AND version = \(expectedVersion)
        RETURNING version
        """, logger: logger
      ).decode(Int64.self) {
        return version
      }
      return nil
    }
  }
}
