import Foundation
import Testing

@testable import HourglassCore

struct FixedGenerator: RandomNumberGenerator {
  var state: UInt64
  mutating func next() -> UInt64 {
    state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
    return state
  }
}

@Suite("Task identifiers")
struct TaskIDTests {
  @Test func versionSevenLayout() {
    var rng = FixedGenerator(state: 1)
    let id = TaskID(unixMilliseconds: 1_767_225_600_123, using: &rng)
    #expect(id.version == 7)
    #expect(id.unixMilliseconds == 1_767_225_600_123)
    #expect(id.bytes[8] & 0xC0 == 0x80, "RFC 4122 variant bits")
    #expect(id.description == id.description.lowercased())
    #expect(id.description.count == 36)
  }

  @Test func orderedByTime() {
    var rng = FixedGenerator(state: 2)
    let ids = (0..<100).map { TaskID(unixMilliseconds: 1_000_000 + Int64($0), using: &rng) }
    #expect(ids == ids.sorted())
    #expect(ids.map(\.description) == ids.map(\.description).sorted(), "text sorts the same way")
  }

  @Test func stringAndCodableRoundTrip() throws {
    let id = TaskID.now()
    #expect(TaskID(id.description) == id)
    #expect(TaskID(id.description.uppercased()) == id)
    #expect(TaskID("not-a-uuid") == nil)
    let data = try JSONEncoder().encode([id])
    #expect(String(decoding: data, as: UTF8.self) == "[\"\(id)\"]")
    #expect(try JSONDecoder().decode([TaskID].self, from: data) == [id])
    #expect(TaskID(bytes: id.bytes) == id)
    #expect(TaskID(bytes: [1, 2, 3]) == nil)
  }

  @Test func textAndOrderAgreeWithFoundationAndTheBytes() {
    var rng = FixedGenerator(state: 9)
    let random = (0..<500).map { _ in TaskID(bytes: (0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) })! }
    let ids = random + [TaskID(bytes: [UInt8](repeating: 0, count: 16))!, TaskID(bytes: [UInt8](repeating: 255, count: 16))!]
    for id in ids {
      #expect(id.description == id.uuid.uuidString.lowercased())
    }
    for (a, b) in zip(ids, ids.dropFirst()) {
      #expect((a < b) == a.bytes.lexicographicallyPrecedes(b.bytes))
      #expect(!(a < a))
    }
  }
}

@Suite("Pooled system random numbers")
struct PooledRandomTests {
  @Test("draws across several refills of the pool are all different, from one task or from many")
  func drawsAreDistinctAcrossRefills() async {
    var generator = PooledSystemRandomNumberGenerator()
    let serial = (0..<2_000).map { _ in generator.next() }
    #expect(Set(serial).count == serial.count)
    let concurrent = await withTaskGroup(of: [UInt64].self) { group in
      for _ in 0..<4 {
        group.addTask {
          var mine = PooledSystemRandomNumberGenerator()
          return (0..<1_000).map { _ in mine.next() }
        }
      }
      return await group.reduce(into: []) { $0 += $1 }
    }
    #expect(Set(concurrent + serial).count == concurrent.count + serial.count)
  }

  @Test("ids minted in the same millisecond are distinct version-7 ids")
  func idsInOneMillisecondAreDistinct() {
    let ids = (0..<10_000).map { _ in TaskID(unixMilliseconds: 1_700_000_000_000) }
    #expect(Set(ids).count == ids.count)
    #expect(ids.allSatisfy { $0.description.dropFirst(14).first == "7" })
  }
}

@Suite("Run identifiers, buckets, partitions, fences")
struct RunModelTests {
  @Test func runIDTextForm() throws {
    let task = TaskID("0190a5b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b")!
    let run = RunID(taskID: task, scheduledMicros: 1_767_225_600_000_000)
    #expect(run.description == "0190a5b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b@1767225600000000")
    #expect(RunID(run.description) == run)
    #expect(RunID(RunID(taskID: task, scheduledMicros: -5).description)?.scheduledMicros == -5)
    #expect(RunID("nope@12") == nil)
    #expect(RunID("\(task)@x") == nil)
    // A time no run can have: a peer's run id must not overflow the arithmetic on its time.
    #expect(RunID("\(task)@\(Int64.max)") == nil)
    #expect(RunID("\(task)@\(Int64.min)") == nil)
    #expect(RunID("\(task)@\(RunID.scheduledRange.upperBound)") != nil)
    #expect(RunID("\(task)@\(RunID.scheduledRange.upperBound + 1)") == nil)
    let decoded = try JSONDecoder().decode(RunID.self, from: JSONEncoder().encode(run))
    #expect(decoded == run)
  }

  @Test(arguments: [
    (Int64(0), Int64(0)), (3_599_999_999, 0), (3_600_000_000, 1), (-1, -1),
    (-3_600_000_000, -1), (-3_600_000_001, -2), (1_767_225_600_000_000, 490_896),
  ])
  func hourBucket(micros: Int64, bucket: Int64) {
    let b = HourBucket(containing: micros)
    #expect(b.rawValue == bucket)
    #expect(b.startMicros <= micros && micros < b.endMicros)
  }

  @Test func partitionIsStableAndSpread() {
    // FNV-1a 64 of the empty input and of "a" (published test vectors).
    #expect(Partition.stableHash([UInt8]()) == 0xcbf2_9ce4_8422_2325)
    #expect(Partition.stableHash(Array("a".utf8)) == 0xaf63_dc4c_8601_ec8c)
    let id = TaskID("0190a5b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b")!
    #expect(Partition(taskID: id, count: 64) == Partition(taskID: id, count: 64))
    var rng = FixedGenerator(state: 3)
    var histogram = [Int](repeating: 0, count: 16)
    for i in 0..<16_000 {
      let p = Partition(taskID: TaskID(unixMilliseconds: Int64(i), using: &rng), count: 16)
      histogram[Int(p.rawValue)] += 1
    }
    #expect(histogram.allSatisfy { $0 > 800 && $0 < 1200 }, "roughly uniform: \(histogram)")
  }

  @Test func fenceOnlyGrows() {
    let f = Fence(rawValue: 41)
    #expect(f.next > f)
    #expect(Fence.zero < f)
  }

  @Test func statesKnowWhenTheyAreFinal() {
    #expect(TaskState.allCases.filter(\.isFinal) == [.completed, .dead, .deleted])
    #expect(RunState.allCases.filter { !$0.isTerminal } == [.pending, .leased, .retrying])
  }
}

@Suite("Blob digests")
struct BlobDigestTests {
  @Test(arguments: [
    ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    (
      "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
      "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
    ),
  ])
  func knownVectors(input: String, hex: String) {
    #expect(BlobDigest(of: Array(input.utf8)).hex == hex)
  }

  @Test func millionA() {
    let digest = BlobDigest(of: [UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000))
    #expect(digest.hex == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
  }

  @Test func hexRoundTrip() throws {
    let digest = BlobDigest(of: [1, 2, 3])
    #expect(BlobDigest(hex: digest.hex) == digest)
    #expect(BlobDigest(hex: digest.hex.uppercased()) == digest)
    #expect(BlobDigest(hex: "zz") == nil)
    #expect(try JSONDecoder().decode(BlobDigest.self, from: JSONEncoder().encode(digest)) == digest)
    #expect(digest.description.hasPrefix("sha256:"))
  }
}
