#!/bin/sh
set -e
conf=/etc/rabbitmq/conf.d/10-defaults.conf
{
  echo "loopback_users.guest = false"
  echo "listeners.tcp.default = 5672"
  echo "management.tcp.port = 15672"
  [ -n "$RABBITMQ_DEFAULT_USER" ] && echo "default_user = $RABBITMQ_DEFAULT_USER"
  [ -n "$RABBITMQ_DEFAULT_PASS" ] && echo "default_pass = $RABBITMQ_DEFAULT_PASS"
  [ -n "$RABBITMQ_DEFAULT_VHOST" ] && echo "default_vhost = $RABBITMQ_DEFAULT_VHOST"
  true
} > "$conf"
chown rabbitmq:rabbitmq "$conf"
rabbitmq-plugins --offline enable rabbitmq_management >/dev/null
chown -R rabbitmq:rabbitmq /var/lib/rabbitmq
# Debian's wrapper scripts switch to the rabbitmq user themselves.
exec "$@"
