#!/usr/bin/perl
# A one-route HTTP server (perl-base only): GET /status -> 200 "ok", anything else -> 404.
use strict;
use warnings;
use IO::Socket::INET;

my $server = IO::Socket::INET->new(LocalAddr => '0.0.0.0', LocalPort => 8080, Proto => 'tcp',
                                   Listen => 16, ReuseAddr => 1) or die "listen: $!\n";
while (my $c = $server->accept) {
    my $line = <$c> // '';
    while (my $h = <$c>) { last if $h =~ /^\r?\n$/ }
    my ($code, $body) = $line =~ m{^GET /status } ? ('200 OK', 'ok') : ('404 Not Found', 'no');
    print $c "HTTP/1.0 $code\r\nContent-Type: text/plain\r\nContent-Length: " . length($body)
        . "\r\nConnection: close\r\n\r\n$body";
    close $c;
}
