import Foundation
import GRDB
import HourglassCore
import HourglassStore
import HourglassTestSupport
import Testing

@testable import HourglassStoreSQLite

@Suite("SQLite store: crash safety", .timeLimit(.minutes(3)))
struct CrashSafetyTests {
  /// A child inserts tasks and logs every acknowledged id to a synced file; the test kills it with
  /// SIGKILL after a random number of acknowledgements, reopens the store and checks that every
  /// logged id is present and the file is sound. Repeated on the same file, so later rounds also
  /// recover a WAL left by a killed writer.
  @Test func everyAcknowledgedTaskSurvivesSIGKILL() async throws {
    let child = try #require(
      BuiltProducts.path("hourglass-store-crashtest"),
      "hourglass-store-crashtest must be built beside the test binary")
    try await TemporaryDirectory.with { dir in
      let database = dir.file("crash.sqlite")
      let log = dir.file("acks.log")
      var rng = SystemRandomNumberGenerator()
      var killsAfterAcks = 0
      let rounds = 20
      for round in 0..<rounds {
        // Kill right after start-up now and then, otherwise after 1…60 acknowledgements.
        let target = round % 7 == 3 ? 0 : Int.random(in: 1...60, using: &rng)
        let process = try TestProcess.start(child, arguments: [database, log, String(round * 1000), "8"], errorOutput: .separate)
        let awaited = target == 0 ? "ready" : "ack \(target)"
        // A whole line: the last piece is one still being written (or empty).
        let reached = await process.waitForOutput { $0.split(separator: "\n", omittingEmptySubsequences: false).dropLast().contains { $0 == awaited } }
        process.kill()
        let exit = await process.exit()
        await process.waitForOutputEnd()
        try #require(reached, "child ended early in round \(round): \(process.errorOutput)")
        #expect(exit == .signalled(SIGKILL))
        if target > 0 { killsAfterAcks += 1 }

        let logged = try String(contentsOfFile: log, encoding: .utf8)
          .split(separator: "\n").compactMap { TaskID(String($0)) }
        let store = try await SQLiteTaskStore(configuration: .defaults(path: database))
        #expect(try await store.integrityCheck() == ["ok"], "round \(round)")
        let present = try await store.pool.read { db in
          Set(try Data.fetchAll(db, sql: "SELECT id FROM tasks").compactMap { TaskID(bytes: $0) })
        }
        let missing = logged.filter { !present.contains($0) }
        #expect(missing.isEmpty, "round \(round): \(missing.count) of \(logged.count) acknowledged tasks lost")
        #expect(present.count >= Set(logged).count)
        try await store.close()
      }
      #expect(killsAfterAcks >= 15)
    }
  }
}
