import Testing

@testable import HourglassRPC

@Suite("Stream table")
struct StreamTableTests {
  final class Box {
    let id: UInt32
    init(_ id: UInt32) { self.id = id }
  }

  @Test("finds, replaces and removes what a Dictionary would, through growth and collisions")
  func matchesDictionary() {
    var table = StreamTable<Box>()
    var reference: [UInt32: Box] = [:]
    var generator = SystemRandomNumberGenerator()
    // Ids from a small range collide and wrap around often; odd ids like a client's, too.
    for step in 0..<20_000 {
      let id = step % 3 == 0 ? UInt32.random(in: 1...64, using: &generator) : UInt32.random(in: 1...5_000, using: &generator) | 1
      switch Int.random(in: 0..<3, using: &generator) {
      case 0, 1:
        let box = Box(id)
        table[id] = box
        reference[id] = box
      default:
        #expect(table.removeValue(forKey: id) === reference.removeValue(forKey: id))
      }
      if step % 97 == 0 {
        for (key, value) in reference { #expect(table[key] === value) }
        #expect(table.count == reference.count)
      }
    }
    var seen: [UInt32: Box] = [:]
    for (key, value) in table { seen[key] = value }
    #expect(seen.count == reference.count)
    for (key, value) in reference { #expect(seen[key] === value) }
    #expect(table[0] == nil)
    table.removeAll()
    #expect(table.isEmpty)
    for key in reference.keys { #expect(table[key] == nil) }
  }

  @Test("iterating a copy is unaffected by removals from the original")
  func iterationOverACopy() {
    var table = StreamTable<Box>()
    for id in stride(from: UInt32(1), through: 99, by: 2) { table[id] = Box(id) }
    var visited = 0
    for (id, _) in table {
      table.removeValue(forKey: id)
      visited += 1
    }
    #expect(visited == 50)
    #expect(table.isEmpty)
  }
}
