import Crypto
import Foundation
import HourglassCore
import HourglassProto
import HourglassRPC
import HourglassStore
import Logging

/// The user-facing RPCs: Schedule, Get, List, Delete and ListRuns.
///
/// The caller is whoever its certificate says (role `user`), or the user of its bearer token
/// (with a certificate of role `client`); a request's `user_id` must equal that name, and
/// another user's task answers exactly like a missing one (NOT_FOUND).
struct TaskService: Sendable {
  static let service = "hourglass.v1.TaskService"
  static let schedule = MethodDescriptor(service: service, method: "Schedule")
  static let get = MethodDescriptor(service: service, method: "Get")
  static let list = MethodDescriptor(service: service, method: "List")
  static let delete = MethodDescriptor(service: service, method: "Delete")
  static let listRuns = MethodDescriptor(service: service, method: "ListRuns")

  let store: any TaskStore
  let dispatcher: Dispatcher
  let clock: any CoordinatorClock
  let configuration: CoordinatorConfiguration
  let logger: Logger
  let metrics: CoordinatorMetrics
  /// The Schedule calls waiting for the store, shared by every connection; past its bounds a
  /// Schedule is answered UNAVAILABLE at once (load shedding).
  let waitingSchedules: InFlightBudget

  func register(into router: inout RPCRouter) {
    // Schedule is answered on the connection's event loop, without a task: it validates there,
    // hands the task to the store's group commit, and answers when the commit and the
    // dispatcher have taken it (docs/benchmarks.md, "Submit").
    router.registerUnaryOnEventLoop(Self.schedule) {
      (request: Hourglass_V1_ScheduleRequest, context, responder: UnaryResponder<Hourglass_V1_ScheduleResponse>) in
      let owner: String
      do {
        owner = try self.owner(request.userID, context)
      } catch {
        responder.fail(error)
        return
      }
      schedule(request, owner: owner) { result in
        if case .success(let response) = result { context.annotations["hourglass.task_id"] = "\(response.taskID)" }
        responder.complete(result)
      }
    }
    router.registerUnary(Self.get) { (request: Hourglass_V1_GetRequest, context) in
      context.annotations["hourglass.task_id"] = "\(request.taskID)"
      return try await get(request, owner: try owner(request.userID, context))
    }
    router.registerUnary(Self.list) { (request: Hourglass_V1_ListRequest, context) in
      try await list(request, owner: try owner(request.userID, context))
    }
    router.registerUnary(Self.delete) { (request: Hourglass_V1_DeleteRequest, context) in
      context.annotations["hourglass.task_id"] = "\(request.taskID)"
      return try await delete(request, owner: try owner(request.userID, context))
    }
    router.registerUnary(Self.listRuns) { (request: Hourglass_V1_ListRunsRequest, context) in
      context.annotations["hourglass.task_id"] = "\(request.taskID)"
      return try await listRuns(request, owner: try owner(request.userID, context))
    }
  }

  /// The authenticated owner of the call; `user_id`, when given, must be the same name.
  ///
  /// A certificate of role `user` is the caller's identity; a bearer token (metadata
  /// `authorization: Bearer TOKEN`) sent with it must name the same user. A certificate of role
  /// `client` (a program acting for token-holding users) needs a bearer token, and the token's
  /// user is the caller. Any other role may not call the task service.
  private func owner(_ userID: String, _ context: ServerContext) throws(RPCError) -> String {
    var tokenUser: String?
    if let header = context.metadata[text: "authorization"] {
      let parts = header.split(separator: " ", maxSplits: 1)
      guard parts.count == 2, parts[0].lowercased() == "bearer", let user = configuration.tokens.user(forToken: String(parts[1])) else {
        throw RPCError(code: .unauthenticated, message: "the bearer token is not valid")
      }
      tokenUser = user
    }
    let caller: String
    let peer = context.peer
    switch peer?.role {
    case "user":
      caller = peer!.name
      if let tokenUser, tokenUser != caller {
        throw RPCError(code: .unauthenticated, message: "the bearer token and the certificate name different users")
      }
    case "client", nil:
      guard let tokenUser else {
        throw RPCError(code: .unauthenticated, message: "a user certificate or a bearer token is required")
      }
      caller = tokenUser
    case let role?:
      throw RPCError(code: .permissionDenied, message: "role \(role) may not call the task service")
    }
    guard userID.isEmpty || userID == caller else {
      throw RPCError(code: .permissionDenied, message: "user_id \(userID) is not the authenticated caller")
    }
    return caller
  }

  private func taskID(_ text: String) throws(RPCError) -> TaskID {
    guard let id = TaskID(text) else {
      throw RPCError(code: .invalidArgument, message: "task_id: \"\(text)\" is not a task id")
    }
    return id
  }

  /// Schedules what `request` asks for and tells `completion` the answer, once. Nothing here
  /// waits: the task is validated on the caller's thread, inserted through the store's group
  /// commit, and offered to the dispatcher; `completion` runs when both have taken it (from the
  /// store's writer task or the dispatcher's). Only the rare paths that must read the store (a
  /// retried request, answered with the task its idempotency key stands for) run in a task.
  func schedule(
    _ request: Hourglass_V1_ScheduleRequest, owner: String,
    completion: @escaping @Sendable (Result<Hourglass_V1_ScheduleResponse, any Error>) -> Void
  ) {
    let key = request.idempotencyKey
    // No NUL: PostgreSQL's text refuses it, and the group-committed batch would fail with it.
    guard key.utf8.count <= 256, !key.utf8.contains(0) else {
      completion(.failure(RPCError(code: .invalidArgument, message: "idempotency_key: at most 256 bytes, without NUL characters")))
      return
    }
    let task: NewTask
    // A `do`/`catch` with a `where` clause here crashed the Swift 6.3 compiler (SILGen ownership
    // verification); matching on a `Result` says the same.
    switch Result(catching: { () throws(RPCError) in try newTask(request, owner: owner) }) {
    case .success(let valid):
      task = valid
    case .failure(let error):
      guard !key.isEmpty else {
        completion(.failure(error))
        return
      }
      // A retry of a request that was accepted may no longer validate (its one-shot time has
      // passed): it is still answered with the task its key stands for. The key is only looked
      // up on this path; an accepted request learns about an earlier task from the insert.
      let store = self.store
      completeInTask(completion) {
        guard let existing = try await store.taskID(idempotencyKey: key, owner: owner) else { throw error }
        return try await scheduled(existing, owner: owner)
      }
      return
    }
    let bytes = Self.waitingBytes(of: task)
    guard waitingSchedules.tryTake(items: 1, bytes: bytes) else {
      metrics.schedulesShed.increment()
      let message =
        "the coordinator is overloaded (\(configuration.schedulesInFlight) Schedule calls or \(configuration.scheduleBytesInFlight >> 20) MiB of "
        + "tasks already wait for the store); the task was not scheduled: retry with backoff"
      completion(.failure(RPCError(code: .unavailable, message: message)))
      return
    }
    let (metrics, dispatcher, waitingSchedules) = (self.metrics, self.dispatcher, self.waitingSchedules)
    let started = ContinuousClock.now
    store.insert([task]) { outcome in
      waitingSchedules.give(items: 1, bytes: bytes)
      let standing: [TaskID]
      switch outcome {
      case .success(let ids):
        metrics.storeWrite(.insert, since: started)
        standing = ids
      case .failure(let error):
        completion(.failure(RPCError(code: .unavailable, message: "the task could not be stored; it was not scheduled", cause: error)))
        return
      }
      // The key was used before (a retry, or two requests with one key in flight together): the
      // store kept the earlier task and inserted nothing; answer with that task.
      if let winner = standing.first, winner != task.id {
        completeInTask(completion) { try await scheduled(winner, owner: owner) }
        return
      }
      let first = task.firstRunMicros!
      metrics.tasksScheduled.increment()
      dispatcher.offer(DueEntry(taskID: task.id, scheduledMicros: first, dueMicros: first, priority: request.priority)) {
        var response = Hourglass_V1_ScheduleResponse()
        response.taskID = task.id.description
        response.nextExecution = ProtoTime.timestamp(first)
        completion(.success(response))
      }
    }
  }

  /// What a task weighs against ``CoordinatorConfiguration/scheduleBytesInFlight``: its binary,
  /// arguments and schedule, plus a little for the rest.
  static func waitingBytes(of task: NewTask) -> Int {
    256 + (task.blob?.content.count ?? 0) + task.scheduleSpec.count + task.arguments.reduce(0) { $0 + $1.utf8.count + 8 }
  }

  /// Validates a Schedule request and builds the task it asks for (with a new id and its first
  /// run); throws INVALID_ARGUMENT naming the field at fault.
  private func newTask(_ request: Hourglass_V1_ScheduleRequest, owner: String) throws(RPCError) -> NewTask {
    let operatorName = request.operator.isEmpty ? "exec" : request.operator
    // ASCII only, counted in bytes: the name goes out in every lease.
    guard operatorName.utf8.count <= 64,
      operatorName.utf8.allSatisfy({ $0.isASCIILetterOrDigit || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") })
    else {
      throw RPCError(code: .invalidArgument, message: "operator: must be 1-64 ASCII letters, digits, '-' or '_'")
    }
    guard request.name.utf8.count <= Self.maxNameBytes else {
      throw RPCError(code: .invalidArgument, message: "name: \(request.name.utf8.count) bytes, longer than \(Self.maxNameBytes)")
    }
    guard !request.name.utf8.contains(0) else {
      throw RPCError(code: .invalidArgument, message: "name: must not contain NUL characters")
    }
    guard request.arguments.count <= Self.maxArguments else {
      throw RPCError(code: .invalidArgument, message: "arguments: \(request.arguments.count) of them, more than \(Self.maxArguments)")
    }
    for (index, argument) in request.arguments.enumerated() {
      // The kernel refuses a single argument longer than MAX_ARG_STRLEN at exec, and a NUL would
      // cut it short there: every run would fail.
      guard argument.utf8.count < Self.maxArgumentBytes, !argument.utf8.contains(0) else {
        throw RPCError(
          code: .invalidArgument, message: "arguments[\(index)]: must be under \(Self.maxArgumentBytes) bytes, without NUL characters")
      }
    }
    if operatorName == "exec", request.taskBlob.isEmpty {
      throw RPCError(code: .invalidArgument, message: "task_blob: the exec operator needs a binary")
    }
    // Each run's lease carries the binary and the arguments to an executor in one message.
    let payload = request.taskBlob.count + request.arguments.reduce(0) { $0 + $1.utf8.count }
    guard payload <= Self.maxTaskPayloadBytes else {
      throw RPCError(
        code: .invalidArgument,
        message: "task_blob: \(payload) bytes of binary and arguments exceed the limit of \(Self.maxTaskPayloadBytes) (each lease carries them in one message)")
    }
    guard (-100...100).contains(request.priority) else {
      throw RPCError(code: .invalidArgument, message: "priority: \(request.priority) out of range -100-100")
    }
    guard request.hasSchedule else {
      throw RPCError(code: .invalidArgument, message: "schedule: required")
    }
    let timeout: Int64
    do {
      let asked = request.hasTimeout ? try ScheduleConversion.micros(request.timeout, field: "timeout") : 0
      // Zero, or absent: the server's default (tasks.proto).
      timeout = asked == 0 ? configuration.defaultTimeoutMicros : asked
    } catch {
      throw error.rpcError
    }
    guard timeout > 0 else { throw RPCError(code: .invalidArgument, message: "timeout: must be positive") }
    let spec: ScheduleSpec
    let retry: RetryPolicy
    do {
      spec = try ScheduleConversion.spec(from: request.schedule, isRecurring: request.isRecurring)
      retry = try ScheduleConversion.retry(from: request.hasRetry ? request.retry : nil, timeoutMicros: timeout)
    } catch {
      throw error.rpcError
    }
    let id = TaskID.now()
    let schedule: Schedule
    do {
      schedule = try Schedule(spec, taskID: id.description)
    } catch {
      throw error.rpcError
    }
    let now = clock.nowMicros()
    // A one-shot time slightly in the past (clock skew, "--in 0s") still runs, at once; a
    // recurring schedule starts from now, never with a run before it.
    let after = spec.isRecurring ? now - 1 : now - configuration.pastGraceMicros
    guard let first = schedule.nextFireTime(after: after) else {
      if case .once(.instant(let at)) = spec.kind, at <= after {
        throw RPCError(
          code: .invalidArgument,
          message: "schedule.once: \(RFC3339.formatUTC(micros: at)) is more than \(configuration.pastGraceMicros / 1_000_000) s in the past")
      }
      if let end = spec.end, end <= now {
        throw RPCError(code: .invalidArgument, message: "schedule.not_after: \(RFC3339.formatUTC(micros: end)) has passed")
      }
      throw RPCError(code: .invalidArgument, message: "schedule: it never fires after now")
    }
    return NewTask(
      id: id,
      owner: owner,
      name: request.name,
      operatorName: operatorName,
      blob: request.taskBlob.isEmpty ? nil : Self.blob(request.taskBlob),
      arguments: request.arguments,
      timeZone: spec.timeZone,
      scheduleSpec: StoredTaskSpec(schedule: spec, retry: retry).encoded(),
      recurring: spec.isRecurring && request.isRecurring,
      priority: request.priority,
      maxAttempts: Int32(retry.maxAttempts),
      timeoutMicros: timeout,
      firstRunMicros: first,
      createdAtMicros: now,
      idempotencyKey: request.idempotencyKey.isEmpty ? nil : request.idempotencyKey
    )
  }

  /// Longest task name, in bytes.
  static let maxNameBytes = 1024
  /// Most arguments of one task.
  static let maxArguments = 4096
  /// Longest single argument, in bytes: Linux's MAX_ARG_STRLEN (32 pages).
  static let maxArgumentBytes = 131_072

  /// Most bytes of binary and arguments one task may have: a lease carries them to an executor
  /// in one message, which must stay under the protocol's default maximum message size (4 MiB)
  /// with room for the lease's other fields.
  static let maxTaskPayloadBytes = 4 * 1024 * 1024 - 16 * 1024

  /// The task's binary with its digest from swift-crypto's SHA-256 (BoringSSL's, hardware
  /// accelerated): the portable one in HourglassCore cost ~5% of a Schedule call's CPU.
  private static func blob(_ data: Data) -> TaskBlob {
    TaskBlob(Array(data), digest: BlobDigest(bytes: Array(Crypto.SHA256.hash(data: data)))!)
  }

  /// The answer to a Schedule whose idempotency key names an existing task.
  private func scheduled(_ id: TaskID, owner: String) async throws -> Hourglass_V1_ScheduleResponse {
    var response = Hourglass_V1_ScheduleResponse()
    response.taskID = id.description
    if let record = try await store.task(id: id, owner: owner), let next = record.nextRunMicros {
      response.nextExecution = ProtoTime.timestamp(next)
    }
    return response
  }

  func get(_ request: Hourglass_V1_GetRequest, owner: String) async throws -> Hourglass_V1_GetResponse {
    let id = try taskID(request.taskID)
    guard let record = try await store.task(id: id, owner: owner) else {
      throw RPCError(code: .notFound, message: "no task \(request.taskID)")
    }
    var response = Hourglass_V1_GetResponse()
    response.task = RecordConversion.taskInfo(record)
    return response
  }

  func list(_ request: Hourglass_V1_ListRequest, owner: String) async throws -> Hourglass_V1_ListResponse {
    let limit = request.pageSize == 0 ? 100 : min(Int(request.pageSize), 1000)
    var after: TaskID?
    if !request.pageToken.isEmpty {
      guard let token = TaskID(request.pageToken) else {
        throw RPCError(code: .invalidArgument, message: "page_token: not a token from a previous page")
      }
      after = token
    }
    var states: Set<TaskState>?
    switch request.status {
    case .unspecified, .UNRECOGNIZED: states = [.active, .running, .paused, .completed, .dead]
    case .scheduled, .retrying: states = [.active]
    case .running: states = [.running]
    case .succeeded: states = [.completed]
    case .failed: states = [.dead]
    case .deleted: states = [.deleted]
    case .paused: states = [.paused]
    }
    // A page stops early rather than outgrow one message (names and arguments may be large); the
    // store stops decoding there, so a page of large tasks is never held whole.
    let page = try await store.listTasks(
      owner: owner, query: TaskListQuery(after: after, states: states, limit: limit, maxBytes: Self.responseBudgetBytes))
    var response = Hourglass_V1_ListResponse()
    response.tasks = page.tasks.map(RecordConversion.taskInfo).filter { info in
      switch request.status {
      case .scheduled: return info.taskStatus == .scheduled
      case .retrying: return info.taskStatus == .retrying
      default: return true
      }
    }
    response.nextPageToken = page.nextCursor?.description ?? ""
    return response
  }

  /// The most bytes of records one List or ListRuns answer carries (by the stores' listing
  /// estimates): well under the protocol's default maximum message size (4 MiB), whatever the
  /// page size asked. A single record larger than this still goes alone (a task's binary and
  /// arguments are bounded at Schedule, a run's output tail at 64 KiB).
  static let responseBudgetBytes = 3 << 20

  func delete(_ request: Hourglass_V1_DeleteRequest, owner: String) async throws -> Hourglass_V1_DeleteResponse {
    let id = try taskID(request.taskID)
    let outcome = try await store.deleteTask(id: id, owner: owner, cancelRunning: request.cancelRunning, now: clock.nowMicros())
    var response = Hourglass_V1_DeleteResponse()
    switch outcome {
    case .deleted:
      await dispatcher.forget(taskID: id, cancelling: [], reason: "")
    case .deletedCancellingRuns(let runIDs):
      await dispatcher.forget(taskID: id, cancelling: runIDs, reason: "the task was deleted")
      response.cancelledRun = true
    case .runInProgress(let runID):
      throw RPCError(code: .failedPrecondition, message: "run \(runID) is in progress; delete with cancel_running to stop it")
    case .notFound:
      throw RPCError(code: .notFound, message: "no task \(request.taskID)")
    }
    return response
  }

  func listRuns(_ request: Hourglass_V1_ListRunsRequest, owner: String) async throws -> Hourglass_V1_ListRunsResponse {
    let id = try taskID(request.taskID)
    guard try await store.task(id: id, owner: owner) != nil else {
      throw RPCError(code: .notFound, message: "no task \(request.taskID)")
    }
    let limit = request.pageSize == 0 ? 50 : min(Int(request.pageSize), 500)
    var before: Int64?
    if !request.pageToken.isEmpty {
      guard let value = Int64(request.pageToken) else {
        throw RPCError(code: .invalidArgument, message: "page_token: not a token from a previous page")
      }
      before = value
    }
    let page: RunPage
    do {
      page = try await store.runPage(taskID: id, owner: owner, before: before, limit: limit, maxBytes: Self.responseBudgetBytes)
    } catch TaskStoreError.taskNotFound {
      // Deleted since the check above.
      throw RPCError(code: .notFound, message: "no task \(request.taskID)")
    }
    // Output tails are up to 64 KiB each: the store stops a page early rather than let it
    // outgrow one message.
    var response = Hourglass_V1_ListRunsResponse()
    response.runs = page.runs.map(RecordConversion.runInfo)
    if page.hasMore, let last = page.runs.last {
      response.nextPageToken = String(last.id.scheduledMicros)
    }
    return response
  }
}

extension UInt8 {
  /// `A`-`Z`, `a`-`z` or `0`-`9`.
  fileprivate var isASCIILetterOrDigit: Bool {
    (0x30...0x39).contains(self) || (0x41...0x5A).contains(self) || (0x61...0x7A).contains(self)
  }
}
