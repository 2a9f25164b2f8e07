/// A seeded SplitMix64 generator: the same seed gives the same sequence on every run and
/// platform. For reproducible tests, benchmarks and property checks; never for anything secret.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
  /// The generator's state; each output is derived from it, then it advances.
  public var state: UInt64

  /// Creates a generator whose whole sequence is fixed by `seed`.
  public init(seed: UInt64) {
    state = seed
  }

  /// The next value of the sequence.
  public mutating func next() -> UInt64 {
    // StableHash.mix adds the SplitMix64 increment itself, then applies its finaliser.
    let value = StableHash.mix(state)
    state &+= 0x9e37_79b9_7f4a_7c15
    return value
  }
}
