import Foundation
import HourglassStore
import Testing

@Suite("Arguments coding")
struct ArgumentsCodingTests {
  @Test(arguments: [
    [], [""], ["a", "b"], ["quote \" and \\ backslash"], ["\u{0}\u{1f}\t\n\r"], ["välue ✓ 🎉"],
    [String(repeating: "x", count: 5000)],
  ])
  func roundTripsThroughFoundationJSON(_ arguments: [String]) throws {
    let encoded = ArgumentsCoding.encode(arguments)
    #expect(try JSONDecoder().decode([String].self, from: Data(encoded)) == arguments)
    #expect(ArgumentsCoding.decode(encoded) == arguments)
  }

  @Test func garbageDecodesToNoArguments() {
    #expect(ArgumentsCoding.decode(Array("not json".utf8)) == [])
  }
}
