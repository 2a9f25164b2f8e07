import Foundation
import GRDB
import HourglassCore
import HourglassStore
import Testing

@testable import HourglassStoreSQLite

func sampleTask(
  _ i: Int, owner: String = "alice", firstRun: Int64 = 1_767_225_600_000_000
)
  -> NewTask
{
  var rng = SeededGenerator(seed: UInt64(i) &+ 1)
  return NewTask(
    id: TaskID(unixMilliseconds: 1_767_225_600_000 + Int64(i), using: &rng), owner: owner,
    operatorName: "exec", arguments: [String(repeating: "a", count: 900)],
    firstRunMicros: firstRun + Int64(i), createdAtMicros: firstRun)
}

@Suite("SQLite store: durability settings, schema, group commit")
struct SQLiteStoreTests {
  @Test func synchronousIsFullByDefaultAndReadBack() async throws {
    try await TemporaryDirectory.with { dir in
      let store = try await SQLiteTaskStore(configuration: .defaults(path: dir.file("s.sqlite")))
      #expect(try await store.synchronousSetting() == 2)
      let journal = try await store.pool.read { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") }
      #expect(journal == "wal")
      try await store.close()
    }
  }

  @Test("the writer connection gets the large page cache, the readers the smaller one")
  func cacheSizesPerConnection() async throws {
    try await TemporaryDirectory.with { dir in
      let store = try await SQLiteTaskStore(configuration: .defaults(path: dir.file("s.sqlite")))
      #expect(store.configuration.cacheSizeKiB > store.configuration.readerCacheSizeKiB)
      let writer = try await store.pool.write { db in try Int.fetchOne(db, sql: "PRAGMA cache_size") }
      let reader = try await store.pool.read { db in try Int.fetchOne(db, sql: "PRAGMA cache_size") }
      // Negative: KiB rather than pages.
      #expect(writer == -store.configuration.cacheSizeKiB)
      #expect(reader == -store.configuration.readerCacheSizeKiB)
      try await store.close()
    }
  }

  @Test func weakerSynchronousIsOptIn() async throws {
    try await TemporaryDirectory.with { dir in
      var configuration = SQLiteTaskStore.Configuration.defaults(path: dir.file("s.sqlite"))
      configuration.synchronous = .normal
      let store = try await SQLiteTaskStore(configuration: configuration)
      #expect(try await store.synchronousSetting() == 1)
      try await store.close()
    }
  }

  @Test("migration 4 counts the finished runs a store already had into runs_completed")
  func runsCompletedBackfill() async throws {
    try await TemporaryDirectory.with { dir in
      let path = dir.file("old.sqlite")
      let id = TaskID(unixMilliseconds: 1_000)
      // A store as version 3 left it: one task with two finished runs, one retrying and one skipped.
      let queue = try DatabaseQueue(path: path)
      try SQLiteMigrations.migrator(partitionCount: 64).migrate(queue, upTo: "0003-due-cursor")
      try await queue.write { db in
        try db.execute(
          sql: """
            INSERT INTO tasks (id, owner, name, operator, arguments, time_zone, schedule_spec, recurring,
              priority, max_attempts, timeout_us, state, partition, version, created_us)
            VALUES (?, 'alice', '', 'exec', x'5b5d', 'UTC', x'7b7d', 1, 0, 3, 1000000, 'active', 0, 1, 0)
            """, arguments: [Data(id.bytes)])
        for (at, state) in [(1, "succeeded"), (2, "dead"), (3, "retrying"), (4, "skipped")] {
          try db.execute(
            sql: "INSERT INTO runs (task_id, scheduled_us, attempt, state, fence) VALUES (?, ?, 1, ?, ?)",
            arguments: [Data(id.bytes), at, state, at])
        }
      }
      try queue.close()
      let store = try await SQLiteTaskStore(configuration: .defaults(path: path))
      #expect(try await store.task(id: id, owner: "alice")?.runsCompleted == 2)
      try await store.close()
    }
  }

  @Test func numberedMigrationsAndIndexes() async throws {
    try await TemporaryDirectory.with { dir in
      let store = try await SQLiteTaskStore(configuration: .defaults(path: dir.file("s.sqlite")))
      #expect(
        try await store.appliedMigrations() == [
          "0001-initial", "0002-idempotency-keys", "0003-due-cursor", "0004-runs-completed", "0005-leased-runs-index", "0006-finished-tasks-index",
          "0007-blob-references", "0008-keys-in-tasks",
        ])
      let indexes = try await store.pool.read { db in
        try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%' ORDER BY name")
      }
      #expect(
        indexes == ["runs_leased", "tasks_blob", "tasks_deleted", "tasks_due_id", "tasks_finished", "tasks_idempotency_key", "tasks_owner"])
      let plan = try await store.pool.read { db in
        try Row.fetchAll(
          db,
          sql: """
            EXPLAIN QUERY PLAN
            SELECT id FROM tasks WHERE state = 'active' AND partition = 1 AND due_bucket = 2
            AND due_us >= 0 AND due_us < 10 AND (due_us, id) > (5, x'00') ORDER BY due_us, id LIMIT 10
            """
        ).map { $0["detail"] as String? ?? "" }
      }
      #expect(plan.joined().contains("tasks_due_id"), "due query uses the partial index: \(plan)")
      #expect(!plan.joined().contains("TEMP B-TREE"), "due pages come in index order: \(plan)")
      try await store.close()
      // Reopening migrates nothing and keeps the data.
      let again = try await SQLiteTaskStore(configuration: .defaults(path: dir.file("s.sqlite")))
      #expect(
        try await again.appliedMigrations() == [
          "0001-initial", "0002-idempotency-keys", "0003-due-cursor", "0004-runs-completed", "0005-leased-runs-index", "0006-finished-tasks-index",
          "0007-blob-references", "0008-keys-in-tasks",
        ])
      try await again.close()
    }
  }

  @Test("migration 7 removes the blobs earlier versions left without a task, and blob look-ups use its index")
  func blobReferencesMigration() async throws {
    try await TemporaryDirectory.with { dir in
      let path = dir.file("old.sqlite")
      let used = TaskBlob(Array(repeating: 1, count: 100))
      let orphan = TaskBlob(Array(repeating: 2, count: 100))
      let queue = try DatabaseQueue(path: path)
      try SQLiteMigrations.migrator(partitionCount: 1).migrate(queue, upTo: "0006-finished-tasks-index")
      try await queue.write { db in
        for blob in [used, orphan] {
          try db.execute(
            sql: "INSERT INTO blobs (digest, content, size) VALUES (?, ?, ?)",
            arguments: [Data(blob.digest.bytes), Data(blob.content), blob.content.count])
        }
        try db.execute(
          sql: """
            INSERT INTO tasks (id, owner, name, operator, blob_digest, arguments, time_zone, schedule_spec,
              recurring, priority, max_attempts, timeout_us, state, partition, version, created_us)
            VALUES (?, 'alice', '', 'exec', ?, x'5b5d', 'UTC', x'7b7d', 0, 0, 3, 1000000, 'paused', 0, 1, 0)
            """, arguments: [Data(TaskID(unixMilliseconds: 1_000).bytes), Data(used.digest.bytes)])
      }
      try queue.close()
      let store = try await SQLiteTaskStore(configuration: .defaults(path: path))
      #expect(try await store.blob(orphan.digest) == nil)
      #expect(try await store.blob(used.digest) == used.content)
      let plan = try await store.pool.read { db in
        try Row.fetchAll(
          db, sql: "EXPLAIN QUERY PLAN DELETE FROM blobs WHERE digest = ?1 AND NOT EXISTS (SELECT 1 FROM tasks WHERE blob_digest = ?1)",
          arguments: [Data(used.digest.bytes)]
        ).map { $0["detail"] as String? ?? "" }
      }
      #expect(plan.joined(separator: "; ").contains("tasks_blob"), "a blob's users are found through the index: \(plan)")
      try await store.close()
    }
  }

  @Test("migration 8 moves each idempotency key into its task's row, and a retry still finds the first task")
  func keysInTasksMigration() async throws {
    try await TemporaryDirectory.with { dir in
      let path = dir.file("old.sqlite")
      let keyed = TaskID(unixMilliseconds: 1_000)
      let unkeyed = TaskID(unixMilliseconds: 2_000)
      let queue = try DatabaseQueue(path: path)
      try SQLiteMigrations.migrator(partitionCount: 1).migrate(queue, upTo: "0007-blob-references")
      try await queue.write { db in
        for id in [keyed, unkeyed] {
          try db.execute(
            sql: """
              INSERT INTO tasks (id, owner, name, operator, arguments, time_zone, schedule_spec, recurring,
                priority, max_attempts, timeout_us, state, partition, version, created_us)
              VALUES (?, 'alice', '', 'exec', x'5b5d', 'UTC', x'7b7d', 0, 0, 3, 1000000, 'paused', 0, 1, 0)
              """, arguments: [Data(id.bytes)])
        }
        try db.execute(
          sql: "INSERT INTO idempotency_keys (owner, key, task_id) VALUES ('alice', 'k', ?)", arguments: [Data(keyed.bytes)])
      }
      try queue.close()
      let store = try await SQLiteTaskStore(configuration: .defaults(path: path))
      #expect(try await store.taskID(idempotencyKey: "k", owner: "alice") == keyed)
      #expect(try await store.taskID(idempotencyKey: "k", owner: "bob") == nil)
      // A retry with the key answers with the first task, writes nothing, and stores no blob.
      var retry = NewTask(
        id: TaskID(unixMilliseconds: 3_000), owner: "alice", operatorName: "exec", blob: TaskBlob([7, 7, 7]),
        firstRunMicros: 1, createdAtMicros: 0)
      retry.idempotencyKey = "k"
      #expect(try await store.insert([retry]) == [keyed])
      #expect(try await store.task(id: retry.id, owner: "alice") == nil)
      #expect(try await store.blob(TaskBlob([7, 7, 7]).digest) == nil)
      let tables = try await store.pool.read { db in
        try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
      }
      #expect(!tables.contains("idempotency_keys"))
      try await store.close()
    }
  }

  @Test("the blob walk removes a blob no task refers to and keeps the others")
  func blobWalkRemovesBlobsWithoutTask() async throws {
    try await TemporaryDirectory.with { dir in
      let store = try await SQLiteTaskStore(configuration: .defaults(path: dir.file("s.sqlite")))
      let kept = TaskBlob(Array(repeating: 1, count: 100))
      let orphan = TaskBlob(Array(repeating: 2, count: 100))
      try await store.insert([
        NewTask(id: TaskID(unixMilliseconds: 1_000), owner: "alice", operatorName: "exec", blob: kept, firstRunMicros: 1, createdAtMicros: 0)
      ])
      try await store.pool.write { db in
        try db.execute(
          sql: "INSERT INTO blobs (digest, content, size) VALUES (?, ?, ?)",
          arguments: [Data(orphan.digest.bytes), Data(orphan.content), orphan.content.count])
      }
      #expect(try await store.sweepBlobs(after: nil, limit: 10) == BlobSweep(examined: 2, removed: 1, next: nil))
      #expect(try await store.blob(orphan.digest) == nil)
      #expect(try await store.blob(kept.digest) == kept.content)
      try await store.close()
    }
  }

  @Test func partitionCountIsFixedAtCreation() async throws {
    try await TemporaryDirectory.with { dir in
      let store = try await SQLiteTaskStore(configuration: .defaults(path: dir.file("s.sqlite")))
      #expect(store.partitionCount == 1, "a new file gets one partition by default")
      try await store.close()
      var configuration = SQLiteTaskStore.Configuration.defaults(path: dir.file("s.sqlite"))
      configuration.partitionCount = 65
      await #expect(throws: TaskStoreError.self) {
        _ = try await SQLiteTaskStore(configuration: configuration)
      }
    }
  }

  @Test("a file created with 64 partitions keeps them when opened with the default configuration")
  func existingPartitionCountIsAdopted() async throws {
    try await TemporaryDirectory.with { dir in
      var configuration = SQLiteTaskStore.Configuration.defaults(path: dir.file("s.sqlite"))
      configuration.partitionCount = 64
      let created = try await SQLiteTaskStore(configuration: configuration)
      try await created.insert([sampleTask(0)])
      try await created.close()
      let reopened = try await SQLiteTaskStore(configuration: .defaults(path: dir.file("s.sqlite")))
      #expect(reopened.partitionCount == 64)
      // New tasks are hashed into the file's 64 partitions, not into one.
      let ids = try await reopened.insert((1...8).map { sampleTask($0) })
      var partitions: Set<Partition> = []
      for id in ids {
        let record = try #require(try await reopened.task(id: id, owner: "alice"))
        #expect(record.partition == Partition(taskID: id, count: 64))
        partitions.insert(record.partition)
      }
      #expect(partitions.count > 1)
      try await reopened.close()
    }
  }

  @Test func invalidConfigurationNamesTheField() async throws {
    var configuration = SQLiteTaskStore.Configuration.defaults(path: "/tmp/x.sqlite")
    configuration.maxBatchRows = 0
    await #expect(throws: TaskStoreError.invalidArgument("configuration.maxBatchRows must be at least 1")) {
      _ = try await SQLiteTaskStore(configuration: configuration)
    }
  }

  @Test func concurrentWritersShareTransactions() async throws {
    try await TemporaryDirectory.with { dir in
      let store = try await SQLiteTaskStore(configuration: .defaults(path: dir.file("s.sqlite")))
      let writers = 256
      try await withThrowingTaskGroup(of: Void.self) { group in
        for i in 0..<writers {
          group.addTask { try await store.insert([sampleTask(i)]) }
        }
        try await group.waitForAll()
      }
      let stats = store.groupCommitStatistics
      #expect(stats.items == writers)
      #expect(stats.requests == writers)
      #expect(stats.batches < writers, "gathered into fewer transactions: \(stats)")
      #expect(try await store.counts().tasks[.active] == writers)
      try await store.close()
    }
  }

  @Test(.timeLimit(.minutes(3)))
  func checkpointsRunOnTheirOwnConnectionNeverInACommit() async throws {
    try await TemporaryDirectory.with { dir in
      var configuration = SQLiteTaskStore.Configuration.defaults(path: dir.file("s.sqlite"))
      configuration.walAutocheckpointPages = 16
      let store = try await SQLiteTaskStore(configuration: configuration)
      // SQLite's automatic checkpoint (run by the committing connection) is off on the writer.
      #expect(try await store.writerAutocheckpointPages() == 0)
      // 200 rows with 900-byte arguments append far more than 16 pages to the WAL.
      for batch in 0..<4 { try await store.insert((0..<50).map { sampleTask(batch * 50 + $0) }) }
      let checkpointer = try #require(store.checkpointer)
      await checkpointer.waitUntilCompleted(1)
      #expect(checkpointer.statistics.lastCheckpointedFrames > 0)
      #expect(try await store.counts().tasks[.active] == 200)
      try await store.close()
      // Reopened: every commit is there, checkpointed or still only in the WAL.
      let reopened = try await SQLiteTaskStore(configuration: configuration)
      #expect(try await reopened.counts().tasks[.active] == 200)
      #expect(try await reopened.integrityCheck() == ["ok"])
      try await reopened.close()
    }
  }

  @Test(.timeLimit(.minutes(3)))
  func theWALStartsOverWhileCommitsNeverPause() async throws {
    try await TemporaryDirectory.with { dir in
      var configuration = SQLiteTaskStore.Configuration.defaults(path: dir.file("s.sqlite"))
      configuration.walAutocheckpointPages = 16
      let store = try await SQLiteTaskStore(configuration: configuration)
      let checkpointer = try #require(store.checkpointer)
      // One commit after another, with no pause in which a checkpoint on the checkpointer's
      // own connection could reach the end of the WAL.
      let writing = Task {
        var count = 0
        while !Task.isCancelled {
          do { try await store.insert([sampleTask(count)]) } catch is CancellationError { break }
          count += 1
        }
        return count
      }
      await checkpointer.waitUntilCompleted(40)
      writing.cancel()
      let written = try await writing.value
      // Each commit appends at least a page (a row of 900 bytes, the indexes); 40 wake-ups
      // mean at least 640 pages appended. Had no checkpoint reached the end, the WAL would
      // hold them all; the finishing passes on the writer let it start over each time.
      #expect(written >= 40)
      #expect(checkpointer.statistics.finished > 0)
      let walBytes = try #require(try FileManager.default.attributesOfItem(atPath: dir.file("s.sqlite") + "-wal")[.size] as? Int)
      #expect(walBytes < 200 * 4096, "WAL of \(walBytes) bytes after \(written) commits")
      #expect(try await store.counts().tasks[.active] == written)
      try await store.close()
      let reopened = try await SQLiteTaskStore(configuration: configuration)
      #expect(try await reopened.counts().tasks[.active] == written)
      #expect(try await reopened.integrityCheck() == ["ok"])
      try await reopened.close()
    }
  }

  @Test(.timeLimit(.minutes(3)))
  func aTimelineNotesWriteTransactionsAndCheckpoints() async throws {
    try await TemporaryDirectory.with { dir in
      var configuration = SQLiteTaskStore.Configuration.defaults(path: dir.file("s.sqlite"))
      configuration.walAutocheckpointPages = 16
      let timeline = SQLiteTimeline()
      let store = try await SQLiteTaskStore(configuration: configuration, timeline: timeline)
      // 200 rows with 900-byte arguments: one transaction, far more than 16 pages of WAL.
      let tasks = (0..<200).map { sampleTask($0, firstRun: 1_000) }
      try await store.insert(tasks)
      let requests = tasks.prefix(3).map {
        LeaseRequest(taskID: $0.id, scheduledMicros: $0.firstRunMicros ?? 0, owner: "e", expiresAt: 60_000_000)
      }
      let leases = try await store.createLeases(requests, now: 2_000)
      #expect(leases.allSatisfy { $0 != nil })
      let checkpointer = try #require(store.checkpointer)
      await checkpointer.waitUntilCompleted(1)
      let events = timeline.snapshot
      let insert = try #require(events.first { $0.kind == .insert })
      let lease = try #require(events.first { $0.kind == .lease })
      #expect(insert.count == 200)
      #expect(lease.count == 3)
      for event in [insert, lease] {
        #expect(event.queued <= event.started && event.started <= event.executed)
        #expect(event.executed <= event.committed && event.committed <= event.resumed)
        // The WAL's length after its commit, from the checkpointer's WAL hook.
        #expect(event.walFrames > 0)
      }
      #expect(events.contains { $0.kind == .checkpoint && $0.count > 0 })
      try await store.close()
    }
  }

  @Test func checkpointsInsideCommitsAreOptIn() async throws {
    try await TemporaryDirectory.with { dir in
      var configuration = SQLiteTaskStore.Configuration.defaults(path: dir.file("s.sqlite"))
      configuration.backgroundCheckpoints = false
      configuration.walAutocheckpointPages = 64
      let store = try await SQLiteTaskStore(configuration: configuration)
      #expect(store.checkpointer == nil)
      #expect(try await store.writerAutocheckpointPages() == 64)
      try await store.insert((0..<50).map { sampleTask($0) })
      #expect(try await store.counts().tasks[.active] == 50)
      try await store.close()
    }
  }
}
