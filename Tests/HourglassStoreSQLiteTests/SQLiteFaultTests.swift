import Foundation
import GRDB
import HourglassCore
import HourglassStore
import Testing

@testable import HourglassStoreSQLite

@Suite("SQLite store: faults")
struct SQLiteFaultTests {
  @Test func fullDiskFailsTheBatchWithoutAcknowledgementAndKeepsTheStoreConsistent() async throws {
    try await TemporaryDirectory.with { dir in
      let path = dir.file("full.sqlite")
      // Create the schema, then reopen capped a little above its size: SQLite then reports
      // SQLITE_FULL exactly as on a full disk.
      try await SQLiteTaskStore(configuration: .defaults(path: path)).close()
      var configuration = SQLiteTaskStore.Configuration.defaults(path: path)
      configuration.maxPageCount = 60
      let store = try await SQLiteTaskStore(configuration: configuration)
      var acknowledged: [TaskID] = []
      var refused: [TaskID] = []
      var failure: (any Error)?
      for batch in 0..<100 {
        let tasks = (0..<20).map { sampleTask(batch * 20 + $0) }
        do {
          try await store.insert(tasks)
          acknowledged += tasks.map(\.id)
        } catch {
          failure = error
          refused = tasks.map(\.id)
          break
        }
      }
      let error = try #require(failure as? TaskStoreError, "the cap was reached")
      guard case .io(let message) = error else {
        Issue.record("expected an I/O error, got \(error)")
        return
      }
      #expect(message.localizedCaseInsensitiveContains("full"), "\(message)")
      #expect(!acknowledged.isEmpty)
      // Reads still work, and nothing of the refused batch is visible.
      for id in refused { #expect(try await store.task(id: id, owner: "alice") == nil) }
      try await store.close()

      let reopened = try await SQLiteTaskStore(configuration: .defaults(path: path))
      #expect(try await reopened.integrityCheck() == ["ok"])
      for id in acknowledged { #expect(try await reopened.task(id: id, owner: "alice") != nil) }
      for id in refused { #expect(try await reopened.task(id: id, owner: "alice") == nil) }
      // With space again, the refused tasks can be inserted.
      try await reopened.insert(refused.indices.map { sampleTask(acknowledged.count + $0) })
      #expect(try await reopened.counts().tasks[.active] == acknowledged.count + refused.count)
      try await reopened.close()
    }
  }

  @Test func readOnlyFileRefusesWritesWithoutAcknowledgement() async throws {
    try await TemporaryDirectory.with { dir in
      let path = dir.file("ro.sqlite")
      let writable = try await SQLiteTaskStore(configuration: .defaults(path: path))
      try await writable.insert([sampleTask(1)])
      try await writable.close()

      // Root ignores file modes, so the test opens the file read-only, which takes the same
      // SQLITE_READONLY path a read-only file or mount does.
      var configuration = SQLiteTaskStore.Configuration.defaults(path: path)
      configuration.readOnly = true
      let store = try await SQLiteTaskStore(configuration: configuration)
      await #expect {
        try await store.insert([sampleTask(2)])
      } throws: { error in
        guard case .io(let message) = error as? TaskStoreError else { return false }
        return message.localizedCaseInsensitiveContains("readonly")
          || message.localizedCaseInsensitiveContains("read-only")
      }
      await #expect(throws: TaskStoreError.self) {
        _ = try await store.createLease(
          taskID: sampleTask(1).id, owner: "e", now: 0, expiresAt: 10)
      }
      #expect(try await store.task(id: sampleTask(1).id, owner: "alice") != nil)
      try await store.close()

      let reopened = try await SQLiteTaskStore(configuration: .defaults(path: path))
      #expect(try await reopened.integrityCheck() == ["ok"])
      #expect(try await reopened.task(id: sampleTask(2).id, owner: "alice") == nil)
      #expect(try await reopened.task(id: sampleTask(1).id, owner: "alice")?.state == .active)
      try await reopened.close()
    }
  }
}
