import Foundation
import HourglassCoordinator
import HourglassCore
import Testing

/// The stored schedule column: written without Codable, and still the document earlier versions
/// wrote with `JSONEncoder` (so stores from either read in both).
@Suite("Stored task spec")
struct StoredTaskSpecTests {
  static let specs: [StoredTaskSpec] = [
    StoredTaskSpec(schedule: .cron("*/5 * * * *", timeZone: "America/New_York"), retry: .defaults),
    StoredTaskSpec(
      schedule: ScheduleSpec(.interval(every: 90_000_000, anchor: 1_767_225_600_000_000), maxRuns: 3, overlap: .allow),
      retry: try! RetryPolicy(maxAttempts: 7, initialBackoff: 250_000, multiplier: 1.5, maxBackoff: 10_000_000, jitter: 0, attemptTimeout: 30_000_000)),
    StoredTaskSpec(schedule: .once(at: 1_767_225_600_000_001), retry: .defaults),
  ]

  @Test("encoded() is JSONEncoder's document with sorted keys and unescaped slashes", arguments: specs)
  func sameDocument(_ spec: StoredTaskSpec) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    #expect(String(decoding: spec.encoded(), as: UTF8.self) == String(decoding: try encoder.encode(spec), as: UTF8.self))
  }

  @Test("decode reads what earlier versions stored (JSONEncoder, escaped slashes) and what encoded() writes", arguments: specs)
  func readsBoth(_ spec: StoredTaskSpec) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    #expect(try StoredTaskSpec.decode(Array(try encoder.encode(spec))) == spec)
    #expect(try StoredTaskSpec.decode(spec.encoded()) == spec)
  }

  @Test("a damaged column is an error, not a guess")
  func damaged() {
    #expect(throws: (any Error).self) { try StoredTaskSpec.decode(Array(#"{"schedule":{"kind":"cron","cron":"* * * * *"}}"#.utf8)) }
    #expect(throws: (any Error).self) { try StoredTaskSpec.decode(Array("{\"retry\":{}".utf8)) }
  }
}
