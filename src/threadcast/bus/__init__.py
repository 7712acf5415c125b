"""The two queues: the event log (ordered, replayable) and the work queue (jobs with acks)."""
