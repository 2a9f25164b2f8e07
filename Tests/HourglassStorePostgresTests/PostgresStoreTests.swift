import HourglassCore
import HourglassStore
import HourglassTestSupport
import Logging
import PostgresNIO
import Synchronization
import Testing

@testable import HourglassStorePostgres

@Suite(
  "PostgreSQL store: schema and group commit", .throwawayPostgres,
  .enabled(if: postgresAvailable, "PostgreSQL is not installed (set HOURGLASS_REQUIRE_POSTGRES=1 to fail instead)"))
struct PostgresStoreTests {
  @Test func numberedMigrationsAndClusterTable() async throws {
    let store = try await openTestStore()
    #expect(
      try await store.appliedMigrations() == [
        "0001-initial", "0002-idempotency-keys", "0003-due-cursor", "0004-runs-completed", "0005-cluster-membership", "0006-leased-runs-index",
        "0007-finished-tasks-index", "0008-blob-references", "0009-coordinator-addresses", "0010-keys-in-tasks",
        "0011-lease-incarnations", "0012-coordinator-incarnations",
      ])
    let tables = try await store.rows(
      "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
    ).map { try $0.decode(String.self) }
    #expect(tables == ["blobs", "coordinators", "hourglass_schema_migrations", "partition_leases", "runs", "store_meta", "tasks"])
    let indexes = try await store.rows(
      "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' AND indexname NOT LIKE '%_pkey' ORDER BY indexname"
    ).map { try $0.decode(String.self) }
    #expect(
      indexes == ["runs_leased", "tasks_blob", "tasks_deleted", "tasks_due_id", "tasks_finished", "tasks_idempotency_key", "tasks_owner"])
    let commit = try await store.scalar("SHOW synchronous_commit", as: String.self)
    #expect(commit == "on", "acknowledged means flushed to the server's WAL")
    try await store.close()
  }

  @Test("migration 4 counts the finished runs a store already had into runs_completed")
  func runsCompletedBackfill() async throws {
    let store = try await openTestStore()
    let id = TaskID(unixMilliseconds: 1_000)
    try await store.insert([NewTask(id: id, owner: "alice", operatorName: "exec", firstRunMicros: 1, createdAtMicros: 0)])
    // Back to the schema version 3 left: no counter, and runs finished before the counter existed
    // (two that count, one retrying and one skipped that do not).
    try await undoKeysInTasks(store)
    _ = try await store.rows("DELETE FROM hourglass_schema_migrations WHERE version >= 4")
    _ = try await store.rows("DROP TABLE coordinators")
    _ = try await store.rows("DROP INDEX runs_leased")
    _ = try await store.rows("CREATE INDEX runs_lease ON runs (state, lease_expires_us)")
    _ = try await store.rows("DROP INDEX tasks_finished")
    _ = try await store.rows("DROP INDEX tasks_blob")
    _ = try await store.rows("ALTER TABLE tasks DROP COLUMN runs_completed")
    for (at, state) in [(1, "succeeded"), (2, "dead"), (3, "retrying"), (4, "skipped")] as [(Int64, String)] {
      _ = try await store.rows(
        "INSERT INTO runs (task_id, scheduled_us, attempt, state, fence) VALUES (\(id.uuid), \(at), 1, \(state), \(at))")
    }
    let database = store.configuration.database
    try await store.close()
    let upgraded = try await openTestStore(database: database)
    #expect(
      try await upgraded.appliedMigrations().suffix(9) == [
        "0004-runs-completed", "0005-cluster-membership", "0006-leased-runs-index", "0007-finished-tasks-index",
        "0008-blob-references", "0009-coordinator-addresses", "0010-keys-in-tasks", "0011-lease-incarnations",
        "0012-coordinator-incarnations",
      ])
    #expect(try await upgraded.task(id: id, owner: "alice")?.runsCompleted == 2)
    try await upgraded.close()
  }

  @Test("migration 9 keeps the membership rows of coordinators that knew no address: they dispatch")
  func coordinatorAddressesMigration() async throws {
    let store = try await openTestStore()
    try await undoKeysInTasks(store)
    _ = try await store.rows("DELETE FROM hourglass_schema_migrations WHERE version >= 9")
    _ = try await store.rows("ALTER TABLE coordinators DROP COLUMN address")
    _ = try await store.rows("ALTER TABLE coordinators DROP COLUMN dispatching")
    _ = try await store.rows("INSERT INTO coordinators (id, expires_us) VALUES ('older', 50000)")
    let database = store.configuration.database
    try await store.close()
    let upgraded = try await openTestStore(database: database)
    #expect(
      try await upgraded.appliedMigrations().suffix(4) == [
        "0009-coordinator-addresses", "0010-keys-in-tasks", "0011-lease-incarnations", "0012-coordinator-incarnations",
      ])
    let members = try await upgraded.heartbeatCoordinator(CoordinatorMember(id: "newer", address: "h:1", dispatching: false), now: 1, expiresAt: 60_000)
    #expect(members == [CoordinatorMember(id: "newer", address: "h:1", dispatching: false), CoordinatorMember(id: "older", address: nil, dispatching: true)])
    try await upgraded.close()
  }

  @Test("a task refused for a row that is gone by the next statement (purged meanwhile) is inserted again")
  func refusedTasksWhoseRowIsGoneAreUnresolved() async throws {
    let store = try await openTestStore()
    let holder = TaskID(unixMilliseconds: 1_000)
    let plain = TaskID(unixMilliseconds: 2_000)
    try await store.insert([
      NewTask(id: holder, owner: "alice", operatorName: "exec", firstRunMicros: nil, createdAtMicros: 0, idempotencyKey: "k"),
      NewTask(id: plain, owner: "alice", operatorName: "exec", firstRunMicros: nil, createdAtMicros: 0),
    ])
    let keyed = KeyedNewTask(
      task: NewTask(id: TaskID(unixMilliseconds: 3_000), owner: "alice", operatorName: "exec", firstRunMicros: nil, createdAtMicros: 0, idempotencyKey: "k"),
      outcome: KeyedInsertOutcome())
    let retried = KeyedNewTask(
      task: NewTask(id: plain, owner: "alice", operatorName: "exec", firstRunMicros: nil, createdAtMicros: 0), outcome: nil)
    let sameTaskAgain = KeyedNewTask(
      task: NewTask(id: holder, owner: "alice", operatorName: "exec", firstRunMicros: nil, createdAtMicros: 0, idempotencyKey: "k"),
      outcome: KeyedInsertOutcome())
    let logger = Logger(label: "test")
    // While the rows are there, each refused task is stood for: by the key's task, or by itself.
    let resolved = try await store.client.withConnection { connection in
      try await PostgresTaskStore.unresolved([keyed, retried, sameTaskAgain], connection: connection, logger: logger)
    }
    #expect(resolved.isEmpty)
    #expect(keyed.outcome?.existing == holder)
    #expect(sameTaskAgain.outcome?.existing == nil, "a retried task stands for itself")
    // Once they are purged, nothing stands for them: they go back to be inserted.
    _ = try await store.rows("DELETE FROM tasks")
    keyed.outcome?.clear()
    let pending = try await store.client.withConnection { connection in
      try await PostgresTaskStore.unresolved([keyed, retried, sameTaskAgain], connection: connection, logger: logger)
    }
    #expect(pending.map(\.task.id) == [keyed.task.id, plain, holder])
    #expect(keyed.outcome?.existing == nil)
    try await store.close()
  }

  /// Takes `store`'s schema back to what migration 10 left.
  private func undoLeaseIncarnations(_ store: PostgresTaskStore) async throws {
    _ = try await store.rows("DELETE FROM hourglass_schema_migrations WHERE version >= 11")
    _ = try await store.rows("ALTER TABLE partition_leases DROP COLUMN incarnation")
    _ = try await store.rows("ALTER TABLE coordinators DROP COLUMN incarnation")
    _ = try await store.rows("DROP SEQUENCE coordinator_incarnations")
  }

  /// Takes `store`'s schema back to what migration 9 left: the keys in a table of their own.
  private func undoKeysInTasks(_ store: PostgresTaskStore) async throws {
    try await undoLeaseIncarnations(store)
    _ = try await store.rows("DELETE FROM hourglass_schema_migrations WHERE version >= 10")
    _ = try await store.rows("DROP INDEX tasks_idempotency_key")
    _ = try await store.rows("ALTER TABLE tasks DROP COLUMN idempotency_key")
    _ = try await store.rows(
      "CREATE TABLE idempotency_keys (owner text NOT NULL, key text NOT NULL, task_id uuid NOT NULL, PRIMARY KEY (owner, key))")
    _ = try await store.rows("CREATE INDEX idempotency_keys_task ON idempotency_keys (task_id)")
  }

  @Test("migration 11 keeps the partition leases held before it: their owner renews them, another process of it takes them with a new epoch")
  func leaseIncarnationsMigration() async throws {
    let store = try await openTestStore(partitionCount: 4)
    try await undoLeaseIncarnations(store)
    _ = try await store.rows("INSERT INTO partition_leases (partition, owner, epoch, expires_us) VALUES (0, 'a', 3, 10000), (1, 'a', 5, 10000)")
    let database = store.configuration.database
    try await store.close()
    let upgraded = try await openTestStore(partitionCount: 4, database: database)
    #expect(try await upgraded.appliedMigrations().suffix(2) == ["0011-lease-incarnations", "0012-coordinator-incarnations"])
    #expect(try await upgraded.partitionLeases().map(\.epoch) == [3, 5])
    // The coordinator upgraded and restarted: a process of its own, so a new epoch fences the
    // one that ran before (which knew no incarnations).
    let taken = try await upgraded.acquirePartitions(
      [Partition(rawValue: 0), Partition(rawValue: 1)], owner: "a", incarnation: 1_000, now: 2_000, expiresAt: 12_000)
    #expect(taken.map(\.epoch) == [4, 6])
    #expect(try await upgraded.acquirePartitions([Partition(rawValue: 0)], owner: "b", incarnation: 1_000, now: 3_000, expiresAt: 13_000).isEmpty)
    try await upgraded.close()
  }

  @Test("migration 10 moves each idempotency key into its task's row, and a retry still finds the first task")
  func keysInTasksMigration() async throws {
    let store = try await openTestStore()
    let keyed = TaskID(unixMilliseconds: 1_000)
    let unkeyed = TaskID(unixMilliseconds: 2_000)
    try await store.insert([
      NewTask(id: keyed, owner: "alice", operatorName: "exec", firstRunMicros: nil, createdAtMicros: 0),
      NewTask(id: unkeyed, owner: "alice", operatorName: "exec", firstRunMicros: nil, createdAtMicros: 0),
    ])
    try await undoKeysInTasks(store)
    _ = try await store.rows("INSERT INTO idempotency_keys (owner, key, task_id) VALUES ('alice', 'k', \(keyed.uuid))")
    let database = store.configuration.database
    try await store.close()
    let upgraded = try await openTestStore(database: database)
    #expect(try await upgraded.appliedMigrations().suffix(3) == ["0010-keys-in-tasks", "0011-lease-incarnations", "0012-coordinator-incarnations"])
    #expect(try await upgraded.taskID(idempotencyKey: "k", owner: "alice") == keyed)
    #expect(try await upgraded.taskID(idempotencyKey: "k", owner: "bob") == nil)
    // A retry with the key answers with the first task, writes nothing, and stores no blob.
    let retry = NewTask(
      id: TaskID(unixMilliseconds: 3_000), owner: "alice", operatorName: "exec", blob: TaskBlob([7, 7, 7]),
      firstRunMicros: 1, createdAtMicros: 0, idempotencyKey: "k")
    #expect(try await upgraded.insert([retry]) == [keyed])
    #expect(try await upgraded.task(id: retry.id, owner: "alice") == nil)
    #expect(try await upgraded.blob(TaskBlob([7, 7, 7]).digest) == nil)
    let tables = try await upgraded.rows("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").map { try $0.decode(String.self) }
    #expect(!tables.contains("idempotency_keys"))
    try await upgraded.close()
  }

  @Test("a blob's removal waits for an insert storing a task with it, and then keeps the blob")
  func blobRemovalWaitsForAnInsertInFlight() async throws {
    let store = try await openTestStore()
    let blob = TaskBlob(Array(repeating: 5, count: 300))
    // The blob is stored and no committed task refers to it: removable, as far as a snapshot
    // taken now can tell.
    try await storeBlobWithoutTask(blob, in: store)
    let task = NewTask(
      id: TaskID(unixMilliseconds: 1_000), owner: "alice", operatorName: "exec", blob: blob,
      firstRunMicros: 1_767_225_600_000_000, createdAtMicros: 0)
    let removalDone = Flag()
    let removal = try await PostgresTaskStore.transaction(client: store.client, logger: store.logger) { connection in
      // An insert in flight: its task is written but not committed.
      try await PostgresTaskStore.insertBatch(
        [KeyedNewTask(task: task, outcome: nil)], partitions: store.partitionCount, connection: connection, logger: store.logger)
      let removal = Task {
        defer { removalDone.set() }
        return try await store.removeUnreferencedBlobs([blob.digest])
      }
      // Commit only once the removal waits for the blob's lock (or has, wrongly, finished).
      while !removalDone.isSet {
        let waiting = try await store.scalar(
          """
          SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
            AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
          """, as: Int64.self)
        if waiting ?? 0 > 0 { break }
        try await Task.sleep(for: .milliseconds(5))
      }
      return removal
    }
    #expect(try await removal.value == 0, "the removal saw the task committed while it waited")
    #expect(try await store.blob(blob.digest) == blob.content)
    #expect(try await store.task(id: task.id, owner: "alice")?.blobDigest == blob.digest)
    try await store.close()
  }

  @Test("removing the blobs of purged tasks does not wait for inserts storing a blob other tasks still use")
  func blobRemovalLeavesUsedBlobsUnlocked() async throws {
    let store = try await openTestStore()
    let shared = TaskBlob(Array(repeating: 6, count: 300))
    func task(_ milliseconds: Int64) -> NewTask {
      NewTask(
        id: TaskID(unixMilliseconds: milliseconds), owner: "alice", operatorName: "exec", blob: shared,
        firstRunMicros: 1_767_225_600_000_000, createdAtMicros: 0)
    }
    try await store.insert([task(1_000)])
    let returnedAtOnce = try await PostgresTaskStore.transaction(client: store.client, logger: store.logger) { connection in
      // An insert in flight holds the blob's lock in shared mode.
      try await PostgresTaskStore.insertBatch(
        [KeyedNewTask(task: task(2_000), outcome: nil)], partitions: store.partitionCount, connection: connection, logger: store.logger)
      // A committed task uses the blob, so the removal has nothing to lock; waiting for the
      // lock would last until this transaction ends, after the 10 s below.
      return await finishesFirst {
        _ = try? await store.removeUnreferencedBlobs([shared.digest])
      } before: {
        try? await Task.sleep(for: .seconds(10))
      }
    }
    #expect(returnedAtOnce)
    #expect(try await store.blob(shared.digest) == shared.content)
    try await store.close()
  }

  @Test("the blob walk removes a blob no task refers to and keeps the others")
  func blobWalkRemovesBlobsWithoutTask() async throws {
    let store = try await openTestStore()
    let kept = TaskBlob(Array(repeating: 1, count: 100))
    let orphan = TaskBlob(Array(repeating: 2, count: 100))
    try await store.insert([
      NewTask(id: TaskID(unixMilliseconds: 1_000), owner: "alice", operatorName: "exec", blob: kept, firstRunMicros: 1, createdAtMicros: 0)
    ])
    try await storeBlobWithoutTask(orphan, in: store)
    #expect(try await store.sweepBlobs(after: nil, limit: 10) == BlobSweep(examined: 2, removed: 1, next: nil))
    #expect(try await store.blob(orphan.digest) == nil)
    #expect(try await store.blob(kept.digest) == kept.content)
    try await store.close()
  }

  @Test("a page by size is cut on the server: it sends about the page, not a whole limit of large tasks")
  func pagesBySizeAreCutOnTheServer() async throws {
    let store = try await openTestStore()
    // Ten tasks with one 100 KB argument each, and ten whose argument's control characters JSON
    // stores six times longer than the listing counts them (the server weighs them heavier).
    let plain = (0..<10).map { i in
      NewTask(
        id: TaskID(unixMilliseconds: 1_000 + Int64(i)), owner: "alice", operatorName: "exec",
        arguments: [String(repeating: "a", count: 100_000)], firstRunMicros: nil, createdAtMicros: 0)
    }
    let escaped = (0..<10).map { i in
      NewTask(
        id: TaskID(unixMilliseconds: 2_000 + Int64(i)), owner: "bob", operatorName: "exec",
        arguments: [String(repeating: "\u{1}", count: 50_000)], firstRunMicros: nil, createdAtMicros: 0)
    }
    try await store.insert(plain + escaped)

    let first = try await store.taskPage(owner: "alice", query: TaskListQuery(limit: 10, maxBytes: 250_000))
    #expect(first.page.tasks.map(\.id) == plain.prefix(2).map(\.id))
    #expect(first.page.nextCursor == plain[1].id)
    #expect(first.rowsSent == 3, "the two of the page and the one that ends it; not all eleven")

    // Where the server cuts before the page is full by the listing's count, the page still says
    // that more follow, and paging reaches every task once.
    var ids: [TaskID] = []
    var cursor: TaskID?
    repeat {
      let (page, rowsSent) = try await store.taskPage(
        owner: "bob", query: TaskListQuery(after: cursor, limit: 10, maxBytes: 120_000))
      #expect(page.tasks.count == 1 && rowsSent == 1)
      ids += page.tasks.map(\.id)
      cursor = page.nextCursor
    } while cursor != nil
    #expect(ids == escaped.map(\.id))
    try await store.close()
  }

  /// Stores `blob` as a version that did not collect blobs could have left it: with no task.
  private func storeBlobWithoutTask(_ blob: TaskBlob, in store: PostgresTaskStore) async throws {
    _ = try await store.rows(
      """
      INSERT INTO blobs (digest, content, size)
      VALUES (\(ByteBuffer(bytes: blob.digest.bytes)), \(ByteBuffer(bytes: blob.content)), \(Int32(blob.content.count)))
      """)
  }

  @Test func concurrentWritersShareTransactions() async throws {
    let store = try await openTestStore()
    let writers = 200
    try await withThrowingTaskGroup(of: Void.self) { group in
      for i in 0..<writers {
        group.addTask {
          try await store.insert([
            NewTask(
              id: TaskID(unixMilliseconds: 1_767_225_600_000 + Int64(i)), owner: "alice",
              operatorName: "exec", blob: TaskBlob(Array(repeating: 7, count: 1024)),
              firstRunMicros: 1_767_225_600_000_000, createdAtMicros: 0)
          ])
        }
      }
      try await group.waitForAll()
    }
    let stats = store.groupCommitStatistics
    #expect(stats.requests == writers)
    #expect(stats.batches < writers, "gathered: \(stats)")
    #expect(try await store.counts().tasks[.active] == writers)
    let blobs = try await store.scalar("SELECT count(*) FROM blobs", as: Int64.self)
    #expect(blobs == 1, "one copy of the shared blob")
    try await store.close()
  }

  @Test func lostServerFailsInsertsWithoutAcknowledgement() async throws {
    let store = try await openTestStore()
    try await store.insert([
      NewTask(id: TaskID.now(), owner: "a", operatorName: "exec", firstRunMicros: 1, createdAtMicros: 0)
    ])
    // Breaking the table stands in for a failing server: the batch errors and nothing is acked.
    _ = try await store.rows("ALTER TABLE tasks ADD CONSTRAINT no_more CHECK (owner <> 'b') NOT VALID")
    await #expect(throws: TaskStoreError.self) {
      try await store.insert([
        NewTask(id: TaskID.now(), owner: "a", operatorName: "exec", firstRunMicros: 1, createdAtMicros: 0),
        NewTask(id: TaskID.now(), owner: "b", operatorName: "exec", firstRunMicros: 1, createdAtMicros: 0),
      ])
    }
    #expect(try await store.counts().tasks[.active] == 1, "the failed batch left nothing behind")
    try await store.close()
  }
}

/// A flag one task raises and another reads.
private final class Flag: Sendable {
  private let raised = Mutex(false)
  var isSet: Bool { raised.withLock { $0 } }
  func set() { raised.withLock { $0 = true } }
}
