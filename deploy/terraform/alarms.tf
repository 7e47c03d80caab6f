# An alarm on the denial rate: egressd writes its decisions and denials as
# CloudWatch Embedded Metric Format lines on the decision log every minute
# (log.emf in egressd.yaml, on in the AMI), CloudWatch Logs turns them into
# the metrics egressd/Decisions and egressd/Denials as the agent ships the
# log, and this alarm fires when the share of denied flows over
# denial_alarm_minutes stays above denial_alarm_percent: a deploy that broke
# something, or a host calling where it should not. Per reason and rule, the
# metric egressd/Denials with dimensions Reason and Rule says which.

resource "aws_cloudwatch_metric_alarm" "denial_rate" {
  count               = var.denial_alarm_percent > 0 ? 1 : 0
  alarm_name          = "${var.name}-denial-rate"
  alarm_description   = "More than ${var.denial_alarm_percent}% of new flows denied by egressd for ${var.denial_alarm_minutes} minutes. See the decision log (${aws_cloudwatch_log_group.decisions.name}) and the metric ${var.emf_namespace}/Denials by Reason and Rule."
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.denial_alarm_percent
  evaluation_periods  = var.denial_alarm_minutes
  datapoints_to_alarm = var.denial_alarm_minutes
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = local.tags

  metric_query {
    id          = "rate"
    expression  = "IF(decisions > 0, 100 * denials / decisions, 0)"
    label       = "Denied flows (%)"
    return_data = true
  }

  metric_query {
    id = "denials"
    metric {
      namespace   = var.emf_namespace
      metric_name = "Denials"
      period      = 60
      stat        = "Sum"
    }
  }

  metric_query {
    id = "decisions"
    metric {
      namespace   = var.emf_namespace
      metric_name = "Decisions"
      period      = 60
      stat        = "Sum"
    }
  }
}
