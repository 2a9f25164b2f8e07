/// What a recurring task does when its next run comes due while the previous run is still going.
public enum OverlapPolicy: String, Sendable, Hashable, Codable, CaseIterable {
  /// Do not start the new run; count it as skipped and move on to the next fire time. The default:
  /// a slow job never piles up copies of itself.
  case skip
  /// Start the new run alongside the previous one.
  case allow

  /// The default, `skip`.
  public static let defaults = OverlapPolicy.skip

  /// Whether a run that is due now may start, given whether an earlier run of the same task is
  /// still in progress.
  public func shouldStart(previousRunInProgress: Bool) -> Bool {
    switch self {
    case .skip: return !previousRunInProgress
    case .allow: return true
    }
  }
}
