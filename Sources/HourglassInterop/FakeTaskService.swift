import Crypto
import Foundation
import HourglassProto
import HourglassRPC
import SwiftProtobuf
import Synchronization

/// An in-memory stand-in for the coordinator's `hourglass.v1.TaskService`, for interop tests of
/// other-language clients (the C client) until the real coordinator serves the same methods.
///
/// Tasks are kept per caller, keyed by the authenticated identity (`ServerContext.peer`); a
/// request whose `user_id` is not the caller's name is refused with PERMISSION_DENIED, another
/// caller's task is NOT_FOUND. `Get` of the task id ``waitTaskID`` never answers (it sleeps
/// until the call is cancelled), for deadline tests.
public final class FakeTaskService: Sendable {
  /// `Get` with this task id waits until the call's deadline or cancellation.
  public static let waitTaskID = "wait-forever"
  /// The default page size of `List`.
  public static let defaultPageSize = 50

  public static let schedule = MethodDescriptor(service: "hourglass.v1.TaskService", method: "Schedule")
  public static let get = MethodDescriptor(service: "hourglass.v1.TaskService", method: "Get")
  public static let list = MethodDescriptor(service: "hourglass.v1.TaskService", method: "List")
  public static let delete = MethodDescriptor(service: "hourglass.v1.TaskService", method: "Delete")

  private struct Stored {
    var info: Hourglass_V1_TaskInfo
    var sequence: Int
  }

  private let tasks = Mutex<(next: Int, byOwner: [String: [String: Stored]])>((0, [:]))

  public init() {}

  /// How many tasks `owner` has.
  public func taskCount(owner: String) -> Int {
    tasks.withLock { $0.byOwner[owner]?.count ?? 0 }
  }

  /// A router serving the four unary methods.
  public func router() -> RPCRouter {
    var router = RPCRouter()
    router.registerUnary(Self.schedule) { [self] (request: Hourglass_V1_ScheduleRequest, context) -> Hourglass_V1_ScheduleResponse in
      try self.scheduleTask(request, owner: try Self.owner(context, claimed: request.userID))
    }
    router.registerUnary(Self.get) { [self] (request: Hourglass_V1_GetRequest, context) -> Hourglass_V1_GetResponse in
      let owner = try Self.owner(context, claimed: request.userID)
      if request.taskID == Self.waitTaskID {
        try await Task.sleep(for: .seconds(3600))
      }
      guard let stored = self.tasks.withLock({ $0.byOwner[owner]?[request.taskID] }) else {
        throw RPCError(code: .notFound, message: "no task \(request.taskID)")
      }
      var response = Hourglass_V1_GetResponse()
      response.task = stored.info
      return response
    }
    router.registerUnary(Self.list) { [self] (request: Hourglass_V1_ListRequest, context) -> Hourglass_V1_ListResponse in
      try self.listTasks(request, owner: try Self.owner(context, claimed: request.userID))
    }
    router.registerUnary(Self.delete) { [self] (request: Hourglass_V1_DeleteRequest, context) -> Hourglass_V1_DeleteResponse in
      let owner = try Self.owner(context, claimed: request.userID)
      let removed = self.tasks.withLock { $0.byOwner[owner]?.removeValue(forKey: request.taskID) }
      guard removed != nil else {
        throw RPCError(code: .notFound, message: "no task \(request.taskID)")
      }
      return Hourglass_V1_DeleteResponse()
    }
    return router
  }

  private static func owner(_ context: ServerContext, claimed: String) throws -> String {
    guard let peer = context.peer else {
      throw RPCError(code: .unauthenticated, message: "no client certificate")
    }
    guard peer.role == "user" else {
      throw RPCError(code: .permissionDenied, message: "role \(peer.role) may not manage tasks")
    }
    guard claimed == peer.name else {
      throw RPCError(code: .permissionDenied, message: "user_id \(claimed) is not the caller \(peer.name)")
    }
    return peer.name
  }

  private func scheduleTask(_ request: Hourglass_V1_ScheduleRequest, owner: String) throws -> Hourglass_V1_ScheduleResponse {
    guard request.hasSchedule, let kind = request.schedule.kind else {
      throw RPCError(code: .invalidArgument, message: "a schedule is required")
    }
    let now = Date()
    var next = Google_Protobuf_Timestamp(date: now.addingTimeInterval(60))
    switch kind {
    case .cron(let cron):
      guard !cron.expression.isEmpty else { throw RPCError(code: .invalidArgument, message: "empty cron expression") }
    case .once(let once):
      if case .instant(let instant)? = once.at { next = instant }
    case .interval(let interval):
      guard interval.every.seconds > 0 else { throw RPCError(code: .invalidArgument, message: "interval must be positive") }
      next = Google_Protobuf_Timestamp(date: now.addingTimeInterval(TimeInterval(interval.every.seconds)))
    }
    var info = Hourglass_V1_TaskInfo()
    info.taskID = UUID().uuidString.lowercased()
    info.taskStatus = .scheduled
    info.name = request.name
    info.operator = request.operator.isEmpty ? "exec" : request.operator
    info.schedule = request.schedule
    info.isRecurring = request.isRecurring
    info.priority = request.priority
    info.created = Google_Protobuf_Timestamp(date: now)
    info.nextExecution = next
    info.blobSha256 = SHA256.hash(data: request.taskBlob).map { String(format: "%02x", $0) }.joined()
    info.arguments = request.arguments
    let stored = info
    tasks.withLock { state in
      state.next += 1
      state.byOwner[owner, default: [:]][stored.taskID] = Stored(info: stored, sequence: state.next)
    }
    var response = Hourglass_V1_ScheduleResponse()
    response.taskID = info.taskID
    response.nextExecution = next
    return response
  }

  private func listTasks(_ request: Hourglass_V1_ListRequest, owner: String) throws -> Hourglass_V1_ListResponse {
    let all = tasks.withLock { state in
      (state.byOwner[owner] ?? [:]).values.sorted { $0.sequence < $1.sequence }.map(\.info)
    }
    let filtered = request.status == .unspecified ? all : all.filter { $0.taskStatus == request.status }
    let start: Int
    if request.pageToken.isEmpty {
      start = 0
    } else {
      guard let offset = Int(request.pageToken), offset >= 0, offset <= filtered.count else {
        throw RPCError(code: .invalidArgument, message: "bad page token")
      }
      start = offset
    }
    let size = request.pageSize == 0 ? Self.defaultPageSize : Int(request.pageSize)
    let end = min(filtered.count, start + size)
    var response = Hourglass_V1_ListResponse()
    response.tasks = Array(filtered[start..<end])
    response.nextPageToken = end < filtered.count ? String(end) : ""
    return response
  }
}
