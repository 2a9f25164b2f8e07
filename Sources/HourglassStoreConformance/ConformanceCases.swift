import HourglassCore
import HourglassStore

extension ConformanceCase {
  static let insertCases: [ConformanceCase] = [
    ConformanceCase("insert then get returns every field") { store in
      let id = makeIDs(1)[0]
      let blob = TaskBlob(Array("#!/bin/sh\necho hi\n".utf8))
      let task = newTask(id, recurring: true, blob: blob, priority: 7)
      try await store.insert([task])
      guard let record = try await store.task(id: id, owner: "alice") else {
        throw ConformanceFailure(message: "inserted task not found", line: #line)
      }
      try expectEqual(record.id, id, "id")
      try expectEqual(record.owner, "alice", "owner")
      try expectEqual(record.name, task.name, "name")
      try expectEqual(record.operatorName, "exec", "operator")
      try expectEqual(record.blobDigest, blob.digest, "blob digest")
      try expectEqual(record.arguments, task.arguments, "arguments")
      try expectEqual(record.timeZone, "Europe/Paris", "time zone")
      try expectEqual(record.scheduleSpec, task.scheduleSpec, "schedule spec")
      try expectEqual(record.recurring, true, "recurring")
      try expectEqual(record.priority, 7, "priority")
      try expectEqual(record.maxAttempts, 3, "max attempts")
      try expectEqual(record.timeoutMicros, 30 * second, "timeout")
      try expectEqual(record.state, .active, "state")
      try expectEqual(
        record.partition, Partition(taskID: id, count: store.partitionCount), "partition")
      try expectEqual(record.nextRunMicros, t0 + 10 * second, "next run")
      try expectEqual(record.dueMicros, t0 + 10 * second, "due")
      try expectEqual(record.lastRunMicros, nil, "last run")
      try expectEqual(record.lastRunState, nil, "last run state")
      try expectEqual(record.version, 1, "version")
      try expectEqual(record.createdAtMicros, t0, "created")
      try expectEqual(try await store.blob(blob.digest), blob.content, "blob content")
    },
    ConformanceCase("an idempotency key stands for one task per owner") { store in
      let ids = makeIDs(5, seed: 77)
      var first = newTask(ids[0])
      first.idempotencyKey = "k1"
      try expectEqual(try await store.insert([first]), [ids[0]], "a new key stands for its own task")
      var retry = newTask(ids[1])
      retry.idempotencyKey = "k1"
      var sameBatch = newTask(ids[2])
      sameBatch.idempotencyKey = "k2"
      var sameBatchAgain = newTask(ids[3])
      sameBatchAgain.idempotencyKey = "k2"
      let unkeyed = makeIDs(1, seed: 78)[0]
      let standing = try await store.insert([retry, sameBatch, newTask(unkeyed), sameBatchAgain])
      try expectEqual(standing, [ids[0], ids[2], unkeyed, ids[2]], "insert answers with the task each key stands for")
      try expectEqual(try await store.taskID(idempotencyKey: "k1", owner: "alice"), ids[0], "k1")
      try expectEqual(try await store.taskID(idempotencyKey: "k2", owner: "alice"), ids[2], "k2")
      try expectEqual(try await store.taskID(idempotencyKey: "k1", owner: "bob"), nil, "another owner")
      let page = try await store.listTasks(owner: "alice", query: TaskListQuery(limit: 10))
      try expectEqual(page.tasks.map(\.id), [ids[0], ids[2], unkeyed].sorted(), "tasks stored")
      var bobs = newTask(ids[4], owner: "bob")
      bobs.idempotencyKey = "k1"
      try expectEqual(try await store.insert([bobs]), [ids[4]], "another owner's key is another key")
      try expectEqual(try await store.taskID(idempotencyKey: "k1", owner: "bob"), ids[4], "bob's own k1")
    },
    ConformanceCase("an insert told by a completion is durable and answers with the standing tasks") { store in
      let ids = makeIDs(3, seed: 79)
      var first = newTask(ids[0])
      first.idempotencyKey = "k"
      var retry = newTask(ids[1])
      retry.idempotencyKey = "k"
      let standing = try await withCheckedThrowingContinuation { continuation in
        store.insert([first, newTask(ids[2]), retry]) { continuation.resume(with: $0) }
      }
      try expectEqual(standing, [ids[0], ids[2], ids[0]], "each task's standing id")
      try expectEqual(try await store.task(id: ids[2], owner: "alice")?.id, ids[2], "inserted")
      try expectEqual(try await store.task(id: ids[1], owner: "alice"), nil, "the retry was not inserted")
      let refused: Result<[TaskID], any Error> = await withCheckedContinuation { continuation in
        store.insert([newTask(makeIDs(1, seed: 80)[0], owner: "")]) { continuation.resume(returning: $0) }
      }
      guard case .failure(let error) = refused, case .invalidArgument = error as? TaskStoreError else {
        throw ConformanceFailure(message: "an invalid task must be refused, got \(refused)", line: #line)
      }
    },
    ConformanceCase("insert is idempotent by id") { store in
      let id = makeIDs(1)[0]
      try await store.insert([newTask(id)])
      try await store.insert([newTask(id), newTask(id)])
      let page = try await store.listTasks(owner: "alice", query: TaskListQuery(limit: 10))
      try expectEqual(page.tasks.map(\.id), [id], "tasks after repeated inserts")
    },
    ConformanceCase("a task without a first run is paused and never due") { store in
      let id = makeIDs(1)[0]
      try await store.insert([newTask(id, firstRun: nil)])
      try expectEqual(try await store.task(id: id, owner: "alice")?.state, .paused, "state")
      let shard = ShardID(
        partition: Partition(taskID: id, count: store.partitionCount),
        bucket: HourBucket(containing: t0))
      try expectEqual(
        try await store.loadDue(shard: shard, from: .min, until: .max, limit: 10), [], "due")
    },
    ConformanceCase("equal blobs are stored once under their SHA-256") { store in
      let content = Array(repeating: UInt8(42), count: 1000)
      let ids = makeIDs(2)
      try await store.insert([newTask(ids[0], blob: TaskBlob(content))])
      try await store.insert([newTask(ids[1], blob: TaskBlob(content))])
      let a = try await store.task(id: ids[0], owner: "alice")?.blobDigest
      let b = try await store.task(id: ids[1], owner: "alice")?.blobDigest
      try expect(a != nil && a == b, "both tasks share one digest, got \(String(describing: a)) and \(String(describing: b))")
      try expectEqual(a, BlobDigest(of: content), "digest is SHA-256 of the content")
      try expectEqual(try await store.blob(a!), content, "blob content")
      try expectEqual(try await store.blob(BlobDigest(of: [1, 2, 3])), nil, "unknown blob")
    },
    ConformanceCase("concurrent inserts are all acknowledged and all present") { store in
      let ids = makeIDs(640, seed: 5)
      try await withThrowingTaskGroup(of: Void.self) { group in
        for chunk in stride(from: 0, to: ids.count, by: 10) {
          let slice = Array(ids[chunk..<chunk + 10])
          group.addTask { try await store.insert(slice.map { newTask($0) }) }
        }
        try await group.waitForAll()
      }
      var seen: [TaskID] = []
      var cursor: TaskID? = nil
      repeat {
        let page = try await store.listTasks(
          owner: "alice", query: TaskListQuery(after: cursor, limit: 100))
        seen += page.tasks.map(\.id)
        cursor = page.nextCursor
      } while cursor != nil
      try expectEqual(seen, ids.sorted(), "every acknowledged id, in order")
    },
    ConformanceCase("an invalid task is refused before writing") { store in
      let id = makeIDs(1)[0]
      try await expectThrows("empty owner", { try await store.insert([newTask(id, owner: "")]) }) {
        if case .invalidArgument = $0 { return true } else { return false }
      }
      try expectEqual(try await store.counts().tasks[.active, default: 0], 0, "active tasks")
    },
  ]

  static let listCases: [ConformanceCase] = [
    ConformanceCase("list pages by id with a keyset cursor and filters by state") { store in
      let ids = makeIDs(25, seed: 7)
      try await store.insert(ids.map { newTask($0) })
      try await store.insert(makeIDs(3, seed: 8).map { newTask($0, owner: "bob") })
      var pages: [[TaskID]] = []
      var cursor: TaskID? = nil
      repeat {
        let page = try await store.listTasks(
          owner: "alice", query: TaskListQuery(after: cursor, limit: 10))
        pages.append(page.tasks.map(\.id))
        cursor = page.nextCursor
      } while cursor != nil
      try expectEqual(pages.map(\.count), [10, 10, 5], "page sizes")
      try expectEqual(pages.flatMap { $0 }, ids.sorted(), "ids in order")

      // By size: every task here weighs the same, so a bound of two and a half is two a page.
      let weight = try await store.task(id: ids[0], owner: "alice")!.listingBytes
      var bySize: [[TaskID]] = []
      repeat {
        let page = try await store.listTasks(
          owner: "alice", query: TaskListQuery(after: cursor, limit: 10, maxBytes: weight * 5 / 2))
        bySize.append(page.tasks.map(\.id))
        cursor = page.nextCursor
      } while cursor != nil
      try expectEqual(bySize.map(\.count), Array(repeating: 2, count: 12) + [1], "page sizes by bytes")
      try expectEqual(bySize.flatMap { $0 }, ids.sorted(), "ids in order by bytes")
      // A bound below one task still moves on, one task a page.
      let single = try await store.listTasks(owner: "alice", query: TaskListQuery(limit: 10, maxBytes: 1))
      try expectEqual(single.tasks.map(\.id), [ids.sorted()[0]], "one task over the bound")
      try expectEqual(single.nextCursor, ids.sorted()[0], "and a cursor after it")

      // Pause three tasks and filter.
      for id in ids.prefix(3) {
        let version = try await store.task(id: id, owner: "alice")!.version
        let advanced = try await store.advance(
          taskID: id, expectedVersion: version, nextRunMicros: t0 + hour, state: .paused)
        try expect(advanced != nil, "advance to paused")
      }
      let paused = try await store.listTasks(
        owner: "alice", query: TaskListQuery(states: [.paused], limit: 10))
      try expectEqual(paused.tasks.map(\.id), Array(ids.prefix(3)).sorted(), "paused tasks")
      try expectEqual(paused.nextCursor, nil, "no further page")
      let active = try await store.listTasks(
        owner: "alice", query: TaskListQuery(states: [.active], limit: 100))
      try expectEqual(active.tasks.count, 22, "active tasks")
    },
    ConformanceCase("another owner's task looks exactly like a missing one") { store in
      let id = makeIDs(1)[0]
      try await store.insert([newTask(id)])
      try expectEqual(try await store.task(id: id, owner: "mallory"), nil, "get")
      try expectEqual(
        try await store.listTasks(owner: "mallory", query: TaskListQuery()).tasks, [], "list")
      try expectEqual(
        try await store.deleteTask(id: id, owner: "mallory", cancelRunning: true, now: t0),
        .notFound, "delete")
      try expectEqual(
        try await store.deleteTask(
          id: makeIDs(1, seed: 1234)[0], owner: "mallory", cancelRunning: true, now: t0),
        .notFound, "delete of a missing task")
      try await expectThrows("runs", { try await store.runs(taskID: id, owner: "mallory", before: nil, limit: 10) }) {
        $0 == .taskNotFound(id)
      }
      try expect(try await store.task(id: id, owner: "alice") != nil, "owner still sees it")
    },
    ConformanceCase("the coordinator's dispatch read ignores the owner but not deletion") { store in
      let id = makeIDs(1)[0]
      try await store.insert([newTask(id, owner: "bob")])
      try expectEqual(try await store.dispatchRecord(taskID: id)?.owner, "bob", "found without owner")
      try expectEqual(
        try await store.dispatchRecord(taskID: makeIDs(1, seed: 555)[0]), nil, "missing task")
      _ = try await store.deleteTask(id: id, owner: "bob", cancelRunning: false, now: t0)
      try expectEqual(try await store.dispatchRecord(taskID: id), nil, "deleted task")
    },
  ]

  static let dueCases: [ConformanceCase] = [
    ConformanceCase("loadDue returns one shard's entries in the window, earliest first") { store in
      let ids = makeIDs(200, seed: 11)
      var tasks: [NewTask] = []
      for (i, id) in ids.enumerated() {
        // Spread over two hours: bucket b0 and b0+1.
        tasks.append(newTask(id, firstRun: t0 + Int64(i) * 36 * second, priority: Int32(i % 5)))
      }
      try await store.insert(tasks)
      let partition = Partition(taskID: ids[0], count: store.partitionCount)
      let bucket = HourBucket(containing: t0)
      let expected = tasks.filter {
        Partition(taskID: $0.id, count: store.partitionCount) == partition
          && HourBucket(containing: $0.firstRunMicros!) == bucket
          && $0.firstRunMicros! >= t0 + 100 * second && $0.firstRunMicros! < t0 + 3000 * second
      }.sorted { $0.firstRunMicros! < $1.firstRunMicros! }
      let entries = try await store.loadDue(
        shard: ShardID(partition: partition, bucket: bucket), from: t0 + 100 * second,
        until: t0 + 3000 * second, limit: 1000)
      try expectEqual(entries.map(\.taskID), expected.map(\.id), "entries")
      try expectEqual(entries.map(\.dueMicros), expected.map { $0.firstRunMicros! }, "due times")
      try expectEqual(entries.map(\.priority), expected.map(\.priority), "priorities")
      try expectEqual(entries.map(\.scheduledMicros), entries.map(\.dueMicros), "scheduled = due")
      let limited = try await store.loadDue(
        shard: ShardID(partition: partition, bucket: bucket), from: .min, until: .max, limit: 2)
      try expect(limited.count <= 2, "limit respected")
      // Every task is in exactly one shard.
      var total = 0
      for p in 0..<store.partitionCount {
        for b in [bucket, bucket.next] {
          total += try await store.loadDue(
            shard: ShardID(partition: Partition(rawValue: p), bucket: b), from: .min, until: .max,
            limit: 1000
          ).count
        }
      }
      try expectEqual(total, ids.count, "entries over all shards")
    },
    ConformanceCase("firstDueBucket finds a partition's next non-empty hour, however far, and skips leased tasks") { store in
      // Three tasks of one partition: 50 h before t0, at t0 and 30 h after it.
      let candidates = makeIDs(400, seed: 31)
      let partition = Partition(taskID: candidates[0], count: store.partitionCount)
      let ids = Array(candidates.filter { Partition(taskID: $0, count: store.partitionCount) == partition }.prefix(3))
      let hour: Int64 = 3_600 * second
      let times = [t0 - 50 * hour, t0 + 10 * second, t0 + 30 * hour]
      try await store.insert(zip(ids, times).map { newTask($0, firstRun: $1) })
      let buckets = times.map(HourBucket.init(containing:))
      let origin = HourBucket(rawValue: 0)
      try expectEqual(try await store.firstDueBucket(partition: partition, atOrAfter: origin), buckets[0], "oldest")
      try expectEqual(try await store.firstDueBucket(partition: partition, atOrAfter: buckets[0].next), buckets[1], "next")
      try expectEqual(try await store.firstDueBucket(partition: partition, atOrAfter: buckets[1]), buckets[1], "at")
      try expectEqual(try await store.firstDueBucket(partition: partition, atOrAfter: buckets[2].next), nil, "none after the last")
      // A leased task is not dispatchable: its hour no longer counts.
      _ = try await store.createLease(taskID: ids[0], owner: "executor-1", now: t0, expiresAt: t0 + 30 * second)
      try expectEqual(try await store.firstDueBucket(partition: partition, atOrAfter: origin), buckets[1], "leased skipped")
      if store.partitionCount > 1 {
        let other = Partition(rawValue: (partition.rawValue + 1) % Int32(store.partitionCount))
        let expected = try await store.firstDueBucket(partition: other, atOrAfter: origin)
        try expect(expected == nil, "another partition has nothing")
      }
    },
    ConformanceCase("loadDue pages by (due time, id): more than a page due at one instant") { store in
      // Seven tasks of one shard due at the same instant, one before and two after it; read
      // three at a time, every entry comes exactly once, in (due time, id) order.
      let candidates = makeIDs(400, seed: 21)
      let partition = Partition(taskID: candidates[0], count: store.partitionCount)
      let ids = Array(
        candidates.filter { Partition(taskID: $0, count: store.partitionCount) == partition }.prefix(10))
      try expectEqual(ids.count, 10, "enough ids in one partition")
      let instant = t0 + 600 * second
      let dueTimes = [instant - second] + Array(repeating: instant, count: 7) + [instant + second, instant + second]
      // Insert in an order unrelated to the ids.
      try await store.insert(zip(ids, dueTimes).reversed().map { newTask($0.0, firstRun: $0.1) })
      let expected = zip(ids, dueTimes).sorted {
        $0.1 != $1.1 ? $0.1 < $1.1 : $0.0.bytes.lexicographicallyPrecedes($1.0.bytes)
      }
      let shard = ShardID(partition: partition, bucket: HourBucket(containing: instant))
      var read: [DueEntry] = []
      var after: DueCursor? = nil
      for _ in 0..<10 {
        let page = try await store.loadDue(
          shard: shard, from: t0, until: t0 + hour, after: after, limit: 3)
        try expect(page.count <= 3, "limit respected")
        read += page
        guard page.count == 3, let last = page.last else { break }
        after = last.cursor
      }
      try expectEqual(read.map(\.taskID), expected.map(\.0), "every entry once, in (due, id) order")
      try expectEqual(read.map(\.dueMicros), expected.map(\.1), "due times")
      // A cursor inside the instant starts just after that entry; the window still applies.
      let fromMiddle = try await store.loadDue(
        shard: shard, from: t0, until: instant + second, after: DueCursor(dueMicros: expected[3].1, taskID: expected[3].0),
        limit: 100)
      try expectEqual(fromMiddle.map(\.taskID), expected[4..<8].map(\.0), "after a cursor, before until")
    },
    ConformanceCase("advance is a compare-and-set on the version; a paused task is not due") { store in
      let id = makeIDs(1)[0]
      try await store.insert([newTask(id, recurring: true)])
      let record = try await store.task(id: id, owner: "alice")!
      try expectEqual(
        try await store.advance(
          taskID: id, expectedVersion: record.version + 5, nextRunMicros: t0 + hour, state: .active),
        nil, "wrong version")
      let v2 = try await store.advance(
        taskID: id, expectedVersion: record.version, nextRunMicros: t0 + hour, state: .active)
      try expect(v2 != nil && v2! > record.version, "version grows, got \(String(describing: v2))")
      let shard = ShardID(partition: record.partition, bucket: HourBucket(containing: t0 + hour))
      try expectEqual(
        try await store.loadDue(shard: shard, from: .min, until: .max, limit: 10).map(\.dueMicros),
        [t0 + hour], "due at the new time")
      let v3 = try await store.advance(
        taskID: id, expectedVersion: v2!, nextRunMicros: t0 + hour, state: .paused)
      try expect(v3 != nil, "pause")
      try expectEqual(
        try await store.loadDue(shard: shard, from: .min, until: .max, limit: 10), [],
        "paused is not due")
      try expectEqual(try await store.task(id: id, owner: "alice")?.version, v3, "stored version")
    },
  ]

  static let deleteCases: [ConformanceCase] = [
    ConformanceCase("deleting a pending task removes it from dispatch at once; purge removes the row") { store in
      let id = makeIDs(1)[0]
      try await store.insert([newTask(id)])
      let shard = ShardID(
        partition: Partition(taskID: id, count: store.partitionCount),
        bucket: HourBucket(containing: t0))
      try expectEqual(
        try await store.loadDue(shard: shard, from: .min, until: .max, limit: 10).count, 1,
        "due before delete")
      try expectEqual(
        try await store.deleteTask(id: id, owner: "alice", cancelRunning: false, now: t0 + second),
        .deleted, "delete")
      try expectEqual(
        try await store.loadDue(shard: shard, from: .min, until: .max, limit: 10), [],
        "due after delete")
      try expectEqual(try await store.task(id: id, owner: "alice"), nil, "get after delete")
      try expectEqual(
        try await store.deleteTask(id: id, owner: "alice", cancelRunning: false, now: t0 + second),
        .notFound, "second delete")
      try await expectThrows(
        "lease a deleted task",
        {
          try await store.createLease(taskID: id, owner: "e", now: t0, expiresAt: t0 + second)
        }
      ) { if case .notDispatchable = $0 { return true } else { return false } }
      try expectEqual(try await store.counts().tasks[.deleted], 1, "deleted, not purged")
      try expectEqual(try await store.purgeDeleted(before: t0, limit: 10).tasks, 0, "too recent")
      try expectEqual(try await store.purgeDeleted(before: t0 + hour, limit: 10).tasks, 1, "purged")
      try expectEqual(try await store.counts().tasks[.deleted, default: 0], 0, "gone")
    },
    ConformanceCase("a task with a NUL character in a text field is refused, alone; the tasks inserted beside it are stored") { store in
      let ids = makeIDs(2, seed: 79)
      var bad = newTask(ids[0])
      bad.name = "nul\u{0}"
      let good = newTask(ids[1])
      async let refused = store.insert([bad])
      async let stored = store.insert([good])
      do {
        _ = try await refused
        throw ConformanceFailure(message: "a name with NUL was stored", line: #line)
      } catch TaskStoreError.invalidArgument(let message) {
        try expect(message.contains("name"), "the field is named: \(message)")
      }
      try expectEqual(try await stored, [ids[1]], "the other task is stored")
    },
    ConformanceCase("purging finished tasks: one whose detached run (overlap allow) is still leased stays until that run's result") { store in
      // A recurring task: its run at t0 + 10 s is detached and goes on; its next and last run
      // finishes first and completes the task.
      let id = makeIDs(1, seed: 78)[0]
      try await store.insert([newTask(id, recurring: true)])
      let first = try await store.createLeases(
        [LeaseRequest(taskID: id, scheduledMicros: t0 + 10 * second, owner: "e1", expiresAt: t0 + hour, advanceTo: t0 + 20 * second)], now: t0 + 10 * second)
      guard let detached = first.first ?? nil else { throw ConformanceFailure(message: "the first run not leased", line: #line) }
      let next = try await store.createLeases(
        [LeaseRequest(taskID: id, scheduledMicros: t0 + 20 * second, owner: "e1", expiresAt: t0 + hour)], now: t0 + 20 * second)
      guard let last = next.first ?? nil else { throw ConformanceFailure(message: "the next run not leased", line: #line) }
      try expectEqual(
        try await store.recordResult(
          runID: last.runID, fence: last.fence, result: RunResult(state: .succeeded, finishedMicros: t0 + 21 * second, next: .finish(.completed))),
        .recorded, "the last run completes the task")
      try expectEqual(try await store.task(id: id, owner: "alice")?.state, .completed, "completed")
      try expectEqual(try await store.purgeFinished(before: .max, limit: 10).tasks, 0, "its detached run is still leased")
      try await store.renewLease(runID: detached.runID, fence: detached.fence, expiresAt: t0 + 2 * hour)
      try expectEqual(
        try await store.recordResult(
          runID: detached.runID, fence: detached.fence, result: RunResult(state: .succeeded, finishedMicros: t0 + 30 * second, next: .runOnly)),
        .recorded, "the detached run's result")
      try expectEqual(try await store.purgeFinished(before: .max, limit: 10).tasks, 1, "purged once no run is leased")
    },
    ConformanceCase("purging finished tasks: completed and dead ones past the instant go with their runs and keys; others stay") { store in
      // Four one-shot tasks due at t0 + 10 s: one completes, one dies, one waits for a retry,
      // one stays running. A fifth finishes without ever running, so counts from its creation.
      let ids = makeIDs(5, seed: 77)
      var tasks = ids.prefix(4).map { newTask($0) }
      for index in tasks.indices { tasks[index].idempotencyKey = "key-\(index)" }
      try await store.insert(tasks)
      let leases = try await store.createLeases(
        ids.prefix(4).map { LeaseRequest(taskID: $0, scheduledMicros: t0 + 10 * second, owner: "e1", expiresAt: t0 + hour) }, now: t0 + 10 * second)
      let leased = leases.compactMap { $0 }
      try expectEqual(leased.count, 4, "leased")
      try expectEqual(
        try await store.recordResult(
          runID: leased[0].runID, fence: leased[0].fence,
          result: RunResult(state: .succeeded, finishedMicros: t0 + 11 * second, next: .finish(.completed))), .recorded, "completed")
      try expectEqual(
        try await store.recordResult(
          runID: leased[1].runID, fence: leased[1].fence,
          result: RunResult(state: .dead, finishedMicros: t0 + 11 * second, next: .finish(.dead))), .recorded, "dead")
      try expectEqual(
        try await store.recordResult(
          runID: leased[2].runID, fence: leased[2].fence,
          result: RunResult(state: .failed, finishedMicros: t0 + 11 * second, next: .retry(atMicros: t0 + hour))), .recorded, "retrying")
      // leased[3] stays running. The fifth is stored without a first run (paused), then moved
      // to completed as a schedule with no further time is.
      var never = newTask(ids[4], firstRun: nil)
      never.createdAtMicros = t0 - hour
      try await store.insert([never])
      let version = try await store.task(id: ids[4], owner: "alice")?.version ?? -1
      _ = try await store.advance(taskID: ids[4], expectedVersion: version, nextRunMicros: nil, state: .completed)
      try expectEqual(try await store.task(id: ids[4], owner: "alice")?.state, .completed, "completed without a run")

      try expectEqual(try await store.purgeFinished(before: t0 - hour, limit: 10).tasks, 0, "nothing finished before its creation")
      try expectEqual(try await store.purgeFinished(before: t0, limit: 10).tasks, 1, "the one that never ran: created at t0 - 1 h")
      try expectEqual(try await store.purgeFinished(before: t0 + 10 * second, limit: 10).tasks, 0, "last runs at t0 + 10 s: not before")
      try expectEqual(try await store.purgeFinished(before: t0 + 11 * second, limit: 1).tasks, 1, "the limit holds")
      try expectEqual(try await store.purgeFinished(before: t0 + 11 * second, limit: 10).tasks, 1, "the other")
      try expectEqual(try await store.purgeFinished(before: .max, limit: 10).tasks, 0, "retrying and running tasks are never purged")
      for index in 0..<2 {
        try expectEqual(try await store.task(id: ids[index], owner: "alice"), nil, "task \(index) gone")
        try expectEqual(try await store.taskID(idempotencyKey: "key-\(index)", owner: "alice"), nil, "key-\(index) forgotten")
      }
      let runs = try await store.counts().runs
      try expectEqual(runs[.succeeded, default: 0] + runs[.dead, default: 0], 0, "the finished tasks' runs gone")
      try expectEqual(runs[.leased, default: 0], 1, "the running task's run kept")
      for index in 2..<4 {
        try expectEqual(try await store.task(id: ids[index], owner: "alice")?.id, ids[index], "task \(index) kept")
        try expectEqual(try await store.taskID(idempotencyKey: "key-\(index)", owner: "alice"), ids[index], "key-\(index) kept")
      }
    },
    ConformanceCase("a purge removes the blobs only its tasks referred to; a new task stores its blob again") { store in
      let shared = TaskBlob(Array(repeating: UInt8(7), count: 600))
      let own = TaskBlob(Array(repeating: UInt8(8), count: 600))
      let ids = makeIDs(4, seed: 91)
      try await store.insert([newTask(ids[0], blob: shared), newTask(ids[1], blob: shared), newTask(ids[2], blob: own)])
      for id in [ids[0], ids[2]] {
        _ = try await store.deleteTask(id: id, owner: "alice", cancelRunning: false, now: t0)
      }
      try expectEqual(
        try await store.purgeDeleted(before: t0 + second, limit: 10), PurgeResult(tasks: 2, blobs: 1),
        "two tasks, and the blob only one of them used")
      try expectEqual(try await store.blob(shared.digest), shared.content, "the blob another task still uses")
      try expectEqual(try await store.blob(own.digest), nil, "the blob no task uses")
      _ = try await store.deleteTask(id: ids[1], owner: "alice", cancelRunning: false, now: t0)
      try expectEqual(
        try await store.purgeDeleted(before: t0 + second, limit: 10), PurgeResult(tasks: 1, blobs: 1), "the last user")
      try expectEqual(try await store.blob(shared.digest), nil, "gone with its last task")
      try await store.insert([newTask(ids[3], blob: shared)])
      try expectEqual(try await store.blob(shared.digest), shared.content, "stored again with a new task")
      try expectEqual(
        try await store.sweepBlobs(after: nil, limit: 10), BlobSweep(examined: 1, removed: 0, next: nil),
        "the walk keeps a blob a task uses")
    },
    ConformanceCase("the blob walk pages through the blobs in digest order") { store in
      let blobs = (0..<5).map { TaskBlob(Array(repeating: UInt8($0), count: 100)) }
      let ids = makeIDs(5, seed: 92)
      try await store.insert(zip(ids, blobs).map { newTask($0, blob: $1) })
      let digests = blobs.map(\.digest).sorted { $0.bytes.lexicographicallyPrecedes($1.bytes) }
      try expectEqual(
        try await store.sweepBlobs(after: nil, limit: 2), BlobSweep(examined: 2, removed: 0, next: digests[1]), "first page")
      try expectEqual(
        try await store.sweepBlobs(after: digests[1], limit: 2), BlobSweep(examined: 2, removed: 0, next: digests[3]),
        "second page")
      try expectEqual(
        try await store.sweepBlobs(after: digests[3], limit: 2), BlobSweep(examined: 1, removed: 0, next: nil),
        "the last page ends the walk")
      for blob in blobs { try expectEqual(try await store.blob(blob.digest), blob.content, "kept") }
    },
    ConformanceCase("deleting a running task needs cancellation, which voids the fence") { store in
      let (id, lease) = try await leasedTask(store)
      try expectEqual(
        try await store.deleteTask(id: id, owner: "alice", cancelRunning: false, now: t0 + 11 * second),
        .runInProgress(lease.runID), "without cancel")
      try expectEqual(
        try await store.task(id: id, owner: "alice")?.state, .running, "still running")
      try expectEqual(
        try await store.deleteTask(id: id, owner: "alice", cancelRunning: true, now: t0 + 12 * second),
        .deletedCancellingRuns([lease.runID]), "with cancel")
      let outcome = try await store.recordResult(
        runID: lease.runID, fence: lease.fence,
        result: RunResult(state: .succeeded, finishedMicros: t0 + 13 * second, next: .finish(.completed)))
      try expectEqual(outcome, .staleFence, "result after cancellation")
      try await expectThrows(
        "renew after cancellation",
        {
          try await store.renewLease(runID: lease.runID, fence: lease.fence, expiresAt: t0 + hour)
        }
      ) { $0 == .staleFence(lease.runID) }
    },
  ]

  static let leaseCases: [ConformanceCase] = [
    ConformanceCase("a lease names the task's current run and carries a fresh fence") { store in
      let (id, lease) = try await leasedTask(store)
      try expectEqual(lease.runID, RunID(taskID: id, scheduledMicros: t0 + 10 * second), "run id")
      try expectEqual(lease.attempt, 1, "attempt")
      try expectEqual(lease.owner, "executor-1", "owner")
      try expect(lease.fence > .zero, "fence above zero")
      let record = try await store.task(id: id, owner: "alice")!
      try expectEqual(record.state, .running, "task state")
      try expectEqual(
        try await store.loadDue(
          shard: ShardID(partition: record.partition, bucket: HourBucket(containing: t0)),
          from: .min, until: .max, limit: 10), [], "a running task is not due")
      try await expectThrows(
        "second lease of the same run",
        {
          try await store.createLease(taskID: id, owner: "executor-2", now: t0, expiresAt: t0 + hour)
        }
      ) { $0 == .notDispatchable(id) }
      try await expectThrows(
        "lease of a missing task",
        {
          try await store.createLease(taskID: makeIDs(1, seed: 4242)[0], owner: "e", now: t0, expiresAt: t0 + 1)
        }
      ) { if case .taskNotFound = $0 { return true } else { return false } }
      let runs = try await store.runs(taskID: id, owner: "alice", before: nil, limit: 10)
      try expectEqual(runs.map(\.state), [.leased], "run states")
      try expectEqual(runs.first?.fence, lease.fence, "stored fence")
      try expectEqual(runs.first?.leaseExpiresMicros, t0 + 40 * second, "stored expiry")
    },
    ConformanceCase("concurrent leases of one run: exactly one wins") { store in
      let id = makeIDs(1)[0]
      try await store.insert([newTask(id)])
      let wins = try await withThrowingTaskGroup(of: Bool.self) { group in
        for i in 0..<8 {
          group.addTask {
            do {
              _ = try await store.createLease(
                taskID: id, owner: "executor-\(i)", now: t0, expiresAt: t0 + hour)
              return true
            } catch TaskStoreError.notDispatchable { return false }
          }
        }
        return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
      }
      try expectEqual(wins, 1, "winning leases")
    },
    ConformanceCase("concurrent lease batches over the same runs: each run leased once") { store in
      let ids = makeIDs(40, seed: 77)
      try await store.insert(ids.map { newTask($0) })
      let due = t0 + 10 * second
      // Four batches, each every task in its own order, one task named twice in each.
      let batches = try await withThrowingTaskGroup(of: [Lease?].self) { group in
        for b in 0..<4 {
          group.addTask {
            let order = b % 2 == 0 ? ids : ids.reversed()
            let requests = (order + [order[0]]).map {
              LeaseRequest(taskID: $0, scheduledMicros: due, owner: "e\(b)", expiresAt: t0 + hour)
            }
            let leases = try await store.createLeases(requests, now: t0)
            try expectEqual(leases.last ?? nil, nil, "a task named twice in one batch is leased once")
            return leases
          }
        }
        return try await group.reduce(into: []) { $0.append($1) }
      }
      let granted = batches.flatMap { $0.compactMap { $0 } }
      try expectEqual(granted.count, ids.count, "leases across all batches")
      try expectEqual(Set(granted.map(\.runID.taskID)), Set(ids), "every run leased")
      try expectEqual(Set(granted.map(\.fence)).count, ids.count, "distinct fences")
      for lease in granted {
        let runs = try await store.runs(taskID: lease.runID.taskID, owner: "alice", before: nil, limit: 10)
        try expectEqual(runs.map(\.fence), [lease.fence], "the stored run carries the winner's fence")
        try expectEqual(runs.map(\.leaseOwner), [lease.owner], "and its owner")
      }
    },
    ConformanceCase("renew checks the fence") { store in
      let (_, lease) = try await leasedTask(store)
      try await store.renewLease(runID: lease.runID, fence: lease.fence, expiresAt: t0 + 90 * second)
      try await expectThrows(
        "stale renew",
        {
          try await store.renewLease(runID: lease.runID, fence: lease.fence.next, expiresAt: t0 + hour)
        }
      ) { $0 == .staleFence(lease.runID) }
      let runs = try await store.runs(taskID: lease.taskID, owner: "alice", before: nil, limit: 1)
      try expectEqual(runs.first?.leaseExpiresMicros, t0 + 90 * second, "expiry after renew")
    },
    ConformanceCase("a renewal batch: each item its own compare-and-set on the fence") { store in
      let ids = makeIDs(3, seed: 91)
      try await store.insert(ids.map { newTask($0) })
      let due = t0 + 10 * second
      let leases = try await store.createLeases(
        ids.map { LeaseRequest(taskID: $0, scheduledMicros: due, owner: "e1", expiresAt: t0 + hour) }, now: t0)
      let leased = leases.compactMap { $0 }
      try expectEqual(leased.count, 3, "leased")
      let done = RunResult(state: .succeeded, finishedMicros: t0 + 11 * second, next: .finish(.completed))
      try expectEqual(
        try await store.recordResult(runID: leased[2].runID, fence: leased[2].fence, result: done), .recorded,
        "third run finished")
      let later = t0 + 2 * hour
      let renewed = try await store.renewLeases([
        LeaseRenewalRequest(runID: leased[0].runID, fence: leased[0].fence, expiresAt: later),
        LeaseRenewalRequest(runID: leased[1].runID, fence: leased[1].fence.next, expiresAt: later),
        LeaseRenewalRequest(runID: leased[2].runID, fence: leased[2].fence, expiresAt: later),
        LeaseRenewalRequest(runID: leased[0].runID, fence: leased[0].fence, expiresAt: later + second),
      ])
      try expectEqual(renewed, [true, false, false, true], "current fence, stale fence, finished run, repeat")
      let renewedRun = try await store.runs(taskID: ids[0], owner: "alice", before: nil, limit: 1)
      try expectEqual(renewedRun.first?.leaseExpiresMicros, later + second, "extended to the latest expiry")
      let staleRun = try await store.runs(taskID: ids[1], owner: "alice", before: nil, limit: 1)
      try expectEqual(staleRun.first?.leaseExpiresMicros, t0 + hour, "a stale fence extends nothing")
      try expectEqual(try await store.renewLeases([]), [], "an empty batch")
      // Fences come from the wire: one no store could have issued is refused, not a crash.
      let wild = Fence(rawValue: .max)
      try expectEqual(
        try await store.renewLeases([LeaseRenewalRequest(runID: leased[0].runID, fence: wild, expiresAt: later)]), [false],
        "a fence above Int64.max")
      try expectEqual(
        try await store.recordResult(runID: leased[0].runID, fence: wild, result: done), .staleFence,
        "a result with a fence above Int64.max")
    },
    ConformanceCase("expired leases are recovered after the skew bound, as the same run with a new fence") { store in
      let (id, lease) = try await leasedTask(store)
      // Expires at t0+40s; skew bound 5s.
      try expectEqual(
        try await store.recoverExpiredLeases(now: t0 + 44 * second, skewBound: 5 * second, limit: 10),
        [], "not yet: within the skew bound")
      let recovered = try await store.recoverExpiredLeases(
        now: t0 + 46 * second, skewBound: 5 * second, limit: 10)
      try expectEqual(recovered.map(\.id), [lease.runID], "recovered run")
      try expectEqual(recovered.first?.state, .pending, "recovered state")
      let record = try await store.task(id: id, owner: "alice")!
      try expectEqual(record.state, .active, "task active again")
      try expectEqual(record.dueMicros, t0 + 46 * second, "due now")
      let due = try await store.loadDue(
        shard: ShardID(partition: record.partition, bucket: HourBucket(containing: t0)),
        from: .min, until: .max, limit: 10)
      try expectEqual(due.map(\.runID), [lease.runID], "due again as the same run")
      // The old holder can no longer write.
      try expectEqual(
        try await store.recordResult(
          runID: lease.runID, fence: lease.fence,
          result: RunResult(state: .succeeded, finishedMicros: t0 + 47 * second, next: .finish(.completed))),
        .staleFence, "old fence after recovery")
      let renewed = try await store.createLease(
        taskID: id, owner: "executor-2", now: t0 + 47 * second, expiresAt: t0 + 80 * second)
      try expectEqual(renewed.runID, lease.runID, "same run")
      try expectEqual(renewed.attempt, 2, "second attempt")
      try expect(renewed.fence > lease.fence, "fence grows: \(renewed.fence) > \(lease.fence)")
      try expectEqual(
        try await store.recordResult(
          runID: lease.runID, fence: lease.fence,
          result: RunResult(state: .succeeded, finishedMicros: t0 + 48 * second, next: .finish(.completed))),
        .staleFence, "old fence after the new lease")
      try expectEqual(
        try await store.recoverExpiredLeases(now: t0 + 60 * second, skewBound: 5 * second, limit: 10),
        [], "the new lease is live")
    },
    ConformanceCase("a lease that runs out on the last allowed attempt is returned still leased, for its fence to record it dead") { store in
      let id = makeIDs(1, seed: 4242)[0]
      try await store.insert([newTask(id, maxAttempts: 1)])
      let lease = try await store.createLease(taskID: id, owner: "executor-1", now: t0 + 10 * second, expiresAt: t0 + 40 * second)
      let found = try await store.recoverExpiredLeases(now: t0 + 46 * second, skewBound: 5 * second, limit: 10)
      try expectEqual(found.map(\.id), [lease.runID], "returned")
      try expectEqual(found.first?.state, .leased, "still leased")
      try expectEqual(found.first?.fence, lease.fence, "with its fence")
      try expectEqual(try await store.task(id: id, owner: "alice")?.state, .running, "its task untouched")
      // Not recorded yet: the next pass returns it again.
      try expectEqual(
        try await store.recoverExpiredLeases(now: t0 + 47 * second, skewBound: 5 * second, limit: 10).map(\.id), [lease.runID], "again")
      let dead = RunResult(state: .dead, finishedMicros: t0 + 47 * second, error: "lease ran out", next: .finish(.dead))
      try expectEqual(try await store.recordResult(runID: lease.runID, fence: lease.fence, result: dead), .recorded, "recorded dead")
      try expectEqual(try await store.task(id: id, owner: "alice")?.state, .dead, "task dead")
      try expectEqual(
        try await store.recoverExpiredLeases(now: t0 + 48 * second, skewBound: 5 * second, limit: 10), [], "nothing left")
    },
  ]

  static let resultCases: [ConformanceCase] = [
    ConformanceCase("a result can forget its recurring task's finished runs before an instant; the count stays") { store in
      let id = makeIDs(1, seed: 808)[0]
      try await store.insert([newTask(id, recurring: true)])
      let minute = 60 * second
      var scheduled = t0 + 10 * second
      for number in 1...3 {
        let leases = try await store.createLeases(
          [LeaseRequest(taskID: id, scheduledMicros: scheduled, owner: "e1", expiresAt: scheduled + hour)], now: scheduled)
        guard let lease = leases.first ?? nil else { throw ConformanceFailure(message: "run \(number) not leased", line: #line) }
        // The third result forgets the runs before the second one.
        let forget: Int64? = number == 3 ? scheduled - minute : nil
        try expectEqual(
          try await store.recordResult(
            runID: lease.runID, fence: lease.fence,
            result: RunResult(
              state: .succeeded, finishedMicros: scheduled + second, next: .reschedule(nextRunMicros: scheduled + minute),
              forgetRunsBeforeMicros: forget)), .recorded, "run \(number)")
        scheduled += minute
      }
      let runs = try await store.runs(taskID: id, owner: "alice", before: nil, limit: 10)
      try expectEqual(runs.map(\.id.scheduledMicros), [t0 + 130 * second, t0 + 70 * second], "the first run forgotten")
      try expectEqual(try await store.task(id: id, owner: "alice")?.runsCompleted, 3, "all three still counted")
    },
    ConformanceCase("a result is recorded once, only with the current fence") { store in
      let (id, lease) = try await leasedTask(store)
      let result = RunResult(
        state: .succeeded, finishedMicros: t0 + 20 * second, exitStatus: 0,
        outputTail: Array("done\n".utf8), next: .finish(.completed))
      try expectEqual(
        try await store.recordResult(runID: lease.runID, fence: lease.fence.next, result: result),
        .staleFence, "wrong fence")
      try expectEqual(
        try await store.task(id: id, owner: "alice")?.state, .running, "unchanged by a stale fence")
      try expectEqual(
        try await store.recordResult(runID: lease.runID, fence: lease.fence, result: result),
        .recorded, "current fence")
      try expectEqual(
        try await store.recordResult(runID: lease.runID, fence: lease.fence, result: result),
        .staleFence, "second record")
      let task = try await store.task(id: id, owner: "alice")!
      try expectEqual(task.state, .completed, "task completed")
      try expectEqual(task.lastRunMicros, lease.runID.scheduledMicros, "last run")
      try expectEqual(task.lastRunState, .succeeded, "last run state")
      try expectEqual(task.nextRunMicros, nil, "no next run")
      try expectEqual(task.runsCompleted, 1, "counted once, not for the stale or repeated result")
      let run = try await store.runs(taskID: id, owner: "alice", before: nil, limit: 10)
      try expectEqual(run.count, 1, "one run")
      try expectEqual(run[0].state, .succeeded, "run state")
      try expectEqual(run[0].exitStatus, 0, "exit status")
      try expectEqual(run[0].outputTail, Array("done\n".utf8), "output")
      try expectEqual(run[0].finishedMicros, t0 + 20 * second, "finished")
    },
    ConformanceCase("a result's reported start replaces the lease's; a result without one keeps it") { store in
      let (reported, reportedLease) = try await leasedTask(store, seed: 811)
      let (unreported, unreportedLease) = try await leasedTask(store, seed: 812)
      try expectEqual(
        try await store.recordResults([
          ResultRecord(
            runID: reportedLease.runID, fence: reportedLease.fence,
            result: RunResult(state: .succeeded, finishedMicros: t0 + 20 * second, startedMicros: t0 + 12 * second, next: .finish(.completed))),
          ResultRecord(
            runID: unreportedLease.runID, fence: unreportedLease.fence,
            result: RunResult(state: .succeeded, finishedMicros: t0 + 20 * second, next: .finish(.completed))),
        ]), [.recorded, .recorded], "both recorded")
      let reportedRun = try await store.runs(taskID: reported, owner: "alice", before: nil, limit: 1).first
      try expectEqual(reportedRun?.startedMicros, t0 + 12 * second, "the executor's start")
      let unreportedRun = try await store.runs(taskID: unreported, owner: "alice", before: nil, limit: 1).first
      try expectEqual(unreportedRun?.startedMicros, t0 + 10 * second, "the lease's start")
      try expectEqual(unreportedRun?.finishedMicros, t0 + 20 * second, "finished")
    },
    ConformanceCase("a retry keeps the run id and makes it due at the backoff time") { store in
      let (id, lease) = try await leasedTask(store)
      let retryAt = t0 + 25 * second
      try expectEqual(
        try await store.recordResult(
          runID: lease.runID, fence: lease.fence,
          result: RunResult(
            state: .failed, finishedMicros: t0 + 20 * second, exitStatus: 1, error: "exit 1",
            next: .retry(atMicros: retryAt))),
        .recorded, "retry recorded")
      let task = try await store.task(id: id, owner: "alice")!
      try expectEqual(task.state, .active, "task active")
      try expectEqual(task.dueMicros, retryAt, "due at backoff")
      try expectEqual(task.nextRunMicros, lease.runID.scheduledMicros, "same run")
      try expectEqual(task.runsCompleted, 0, "a retried attempt is not a completed run")
      let due = try await store.loadDue(
        shard: ShardID(partition: task.partition, bucket: HourBucket(containing: retryAt)),
        from: .min, until: .max, limit: 10)
      try expectEqual(
        due, [DueEntry(taskID: id, scheduledMicros: lease.runID.scheduledMicros, dueMicros: retryAt, priority: 0)],
        "due entry")
      let runs = try await store.runs(taskID: id, owner: "alice", before: nil, limit: 10)
      try expectEqual(runs.map(\.state), [.retrying], "run retrying")
      try expectEqual(runs.first?.retryAtMicros, retryAt, "retry time")
      try expectEqual(runs.first?.error, "exit 1", "error")
      let again = try await store.createLease(
        taskID: id, owner: "executor-2", now: retryAt, expiresAt: retryAt + 30 * second)
      try expectEqual(again.runID, lease.runID, "same run id")
      try expectEqual(again.attempt, 2, "attempt 2")
      try expect(again.fence > lease.fence, "new fence")
      try expectEqual(
        try await store.recordResult(
          runID: again.runID, fence: again.fence,
          result: RunResult(state: .dead, finishedMicros: retryAt + second, next: .finish(.dead))),
        .recorded, "final failure")
      let dead = try await store.task(id: id, owner: "alice")
      try expectEqual(dead?.state, .dead, "task dead")
      try expectEqual(dead?.runsCompleted, 1, "a run of two attempts counts once")
    },
    ConformanceCase("a recurring task moves to its next run; history lists runs newest first") { store in
      let (id, lease) = try await leasedTask(store, recurring: true)
      var scheduled = lease.runID.scheduledMicros
      var fence = lease.fence
      for i in 1...3 {
        let next = scheduled + hour
        try expectEqual(
          try await store.recordResult(
            runID: RunID(taskID: id, scheduledMicros: scheduled), fence: fence,
            result: RunResult(
              state: .succeeded, finishedMicros: scheduled + second, outputTail: Array(repeating: 0x41, count: 10_000),
              next: .reschedule(nextRunMicros: next))),
          .recorded, "run \(i)")
        let task = try await store.task(id: id, owner: "alice")!
        try expectEqual(task.state, .active, "active after run \(i)")
        try expectEqual(task.nextRunMicros, next, "next run after run \(i)")
        try expectEqual(task.lastRunMicros, scheduled, "last run after run \(i)")
        try expectEqual(task.lastRunState, .succeeded, "last state after run \(i)")
        try expectEqual(task.runsCompleted, Int64(i), "runs completed after run \(i)")
        scheduled = next
        let lease = try await store.createLease(
          taskID: id, owner: "executor-1", now: next, expiresAt: next + 30 * second)
        try expectEqual(lease.runID.scheduledMicros, next, "lease names the next run")
        try expectEqual(lease.attempt, 1, "a new run starts at attempt 1")
        try expect(lease.fence > fence, "fence grows")
        fence = lease.fence
      }
      let history = try await store.runs(taskID: id, owner: "alice", before: nil, limit: 10)
      try expectEqual(
        history.map(\.id.scheduledMicros), (0...3).reversed().map { t0 + 10 * second + Int64($0) * hour },
        "history newest first")
      try expectEqual(history.map(\.state), [.leased, .succeeded, .succeeded, .succeeded], "states")
      let older = try await store.runs(
        taskID: id, owner: "alice", before: t0 + 10 * second + 2 * hour, limit: 1)
      try expectEqual(older.map(\.id.scheduledMicros), [t0 + 10 * second + hour], "keyset by time")

      // Pages: by count, and by size (the leased run weighs about 520 bytes, a finished one 10,500).
      let whole = try await store.runPage(taskID: id, owner: "alice", before: nil, limit: 4, maxBytes: nil)
      try expectEqual(whole.runs.count, 4, "a page of all four")
      try expectEqual(whole.hasMore, false, "and nothing after it")
      try expectEqual(
        try await store.runPage(taskID: id, owner: "alice", before: nil, limit: 3, maxBytes: nil).hasMore, true, "more after three")
      var pages: [Int] = []
      var before: Int64?
      while true {
        let page = try await store.runPage(taskID: id, owner: "alice", before: before, limit: 10, maxBytes: 11_100)
        pages.append(page.runs.count)
        guard page.hasMore else { break }
        before = page.runs.last!.id.scheduledMicros
      }
      try expectEqual(pages, [2, 1, 1], "run pages by bytes")
    },
    ConformanceCase("a non-final run state with a final next step is refused") { store in
      let (_, lease) = try await leasedTask(store)
      try await expectThrows(
        "leased as a result",
        {
          try await store.recordResult(
            runID: lease.runID, fence: lease.fence,
            result: RunResult(state: .leased, finishedMicros: t0, next: .finish(.completed)))
        }
      ) { if case .invalidArgument = $0 { return true } else { return false } }
      try expectEqual(
        try await store.runs(taskID: lease.taskID, owner: "alice", before: nil, limit: 1).first?.state,
        .leased, "unchanged")
    },
  ]

  static let miscCases: [ConformanceCase] = [
    ConformanceCase("batches: leases, task reads and results, each item on its own") { store in
      let ids = makeIDs(3, seed: 31)
      let missing = makeIDs(1, seed: 4243)[0]
      try await store.insert(ids.map { newTask($0) })
      let due = t0 + 10 * second
      let leases = try await store.createLeases(
        [
          LeaseRequest(taskID: ids[0], scheduledMicros: due, owner: "e1", expiresAt: t0 + hour),
          LeaseRequest(taskID: ids[1], scheduledMicros: due + 1, owner: "e1", expiresAt: t0 + hour),
          LeaseRequest(taskID: missing, scheduledMicros: due, owner: "e1", expiresAt: t0 + hour),
          LeaseRequest(taskID: ids[2], scheduledMicros: due, owner: "e2", expiresAt: t0 + hour),
        ], now: t0)
      try expectEqual(leases.map { $0 != nil }, [true, false, false, true], "which runs were leased")
      guard let first = leases[0], let last = leases[3] else {
        throw ConformanceFailure(message: "leases 0 and 3 missing", line: #line)
      }
      try expectEqual(first.runID, RunID(taskID: ids[0], scheduledMicros: due), "run id")
      try expectEqual(last.owner, "e2", "owner")
      try expect(first.fence != last.fence, "distinct fences")
      let records = try await store.dispatchRecords(taskIDs: [ids[0], ids[1], missing])
      try expectEqual(Set(records.keys), [ids[0], ids[1]], "records found")
      try expectEqual(records[ids[0]]?.state, .running, "leased task")
      try expectEqual(records[ids[1]]?.state, .active, "task whose request named another run")
      let done = RunResult(state: .succeeded, finishedMicros: t0 + 11 * second, next: .finish(.completed))
      let outcomes = try await store.recordResults([
        ResultRecord(runID: first.runID, fence: first.fence, result: done),
        ResultRecord(runID: last.runID, fence: last.fence.next, result: done),
      ])
      try expectEqual(outcomes, [.recorded, .staleFence], "outcomes")
      try expectEqual(try await store.task(id: ids[0], owner: "alice")?.state, .completed, "recorded task")
      try expectEqual(try await store.task(id: ids[2], owner: "alice")?.state, .running, "stale result changed nothing")
    },
    ConformanceCase("a large mixed result batch: each result its own compare-and-set") { store in
      // More finishing results than one statement of a batched path takes, mixed with stale
      // fences, failures, retries and a result sent twice.
      let ids = makeIDs(150, seed: 41)
      try await store.insert(ids.map { newTask($0) })
      let due = t0 + 10 * second
      let leases = try await store.createLeases(
        ids.map { LeaseRequest(taskID: $0, scheduledMicros: due, owner: "e1", expiresAt: t0 + hour) },
        now: t0)
      let leased = leases.compactMap { $0 }
      try expectEqual(leased.count, ids.count, "all leased")
      try expectEqual(Set(leased.map(\.fence)).count, ids.count, "distinct fences")
      let finished = t0 + 11 * second
      var records: [ResultRecord] = []
      var expected: [RecordOutcome] = []
      for (i, lease) in leased.enumerated() {
        switch i % 10 {
        case 3:
          let done = RunResult(state: .succeeded, finishedMicros: finished, next: .finish(.completed))
          records.append(ResultRecord(runID: lease.runID, fence: lease.fence.next, result: done))
          expected.append(.staleFence)
        case 5:
          let dead = RunResult(
            state: .failed, finishedMicros: finished, exitStatus: 2, error: "boom", next: .finish(.dead))
          records.append(ResultRecord(runID: lease.runID, fence: lease.fence, result: dead))
          expected.append(.recorded)
        case 7:
          let retry = RunResult(state: .failed, finishedMicros: finished, exitStatus: 1, next: .retry(atMicros: t0 + hour))
          records.append(ResultRecord(runID: lease.runID, fence: lease.fence, result: retry))
          expected.append(.recorded)
        default:
          let done = RunResult(
            state: .succeeded, finishedMicros: finished, exitStatus: 0, outputTail: Array("ok \(i)".utf8),
            next: .finish(.completed))
          records.append(ResultRecord(runID: lease.runID, fence: lease.fence, result: done))
          expected.append(.recorded)
        }
      }
      records.append(records[0])
      expected.append(.staleFence)
      try expectEqual(try await store.recordResults(records), expected, "outcomes")
      for (i, id) in ids.enumerated() {
        let task = try await store.task(id: id, owner: "alice")
        let run = try await store.runs(taskID: id, owner: "alice", before: nil, limit: 5).first
        switch i % 10 {
        case 3:
          try expectEqual(task?.state, .running, "stale result \(i): task unchanged")
          try expectEqual(run?.state, .leased, "stale result \(i): run unchanged")
        case 5:
          try expectEqual(task?.state, .dead, "task \(i)")
          try expectEqual(task?.lastRunState, .failed, "last run \(i)")
          try expectEqual(run?.error, "boom", "error \(i)")
        case 7:
          try expectEqual(task?.state, .active, "retried task \(i)")
          try expectEqual(run?.state, .retrying, "retried run \(i)")
        default:
          try expectEqual(task?.state, .completed, "task \(i)")
          try expectEqual(task?.nextRunMicros, nil, "no next run \(i)")
          try expectEqual(task?.lastRunMicros, due, "last run \(i)")
          try expectEqual(task?.lastRunState, .succeeded, "last run state \(i)")
          try expectEqual(run?.state, .succeeded, "run \(i)")
          try expectEqual(run?.finishedMicros, finished, "finished \(i)")
          try expectEqual(run?.exitStatus, 0, "exit status \(i)")
          try expectEqual(run?.outputTail, Array("ok \(i)".utf8), "output \(i)")
        }
      }
    },
    ConformanceCase("counts tasks and runs by state") { store in
      let ids = makeIDs(5, seed: 21)
      try await store.insert(ids.map { newTask($0) })
      _ = try await store.createLease(taskID: ids[0], owner: "e", now: t0, expiresAt: t0 + hour)
      _ = try await store.deleteTask(id: ids[1], owner: "alice", cancelRunning: false, now: t0)
      let counts = try await store.counts()
      try expectEqual(counts.tasks[.active], 3, "active")
      try expectEqual(counts.tasks[.running], 1, "running")
      try expectEqual(counts.tasks[.deleted], 1, "deleted")
      try expectEqual(counts.runs[.leased], 1, "leased runs")
    },
    ConformanceCase("a closed store refuses inserts") { store in
      try await store.close()
      try await expectThrows(
        "insert after close",
        {
          try await store.insert([newTask(makeIDs(1)[0])])
        }
      ) { $0 == .closed }
    },
  ]
}
