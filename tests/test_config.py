"""Settings precedence (defaults < global < project < --config < env < flags) and error reporting."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.agent.config import (
    DEFAULT_MODEL,
    SettingsError,
    config_dir,
    config_files,
    load_settings,
    parse_tool_names,
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def global_config(home: Path) -> Path:
    return home / ".config" / "opi" / "config.toml"


def test_defaults_without_any_file(repo: Path) -> None:
    settings = load_settings(repo, env={})
    assert settings.model == DEFAULT_MODEL
    assert settings.max_turns == 50
    assert settings.thinking == "off"
    assert settings.max_cost_usd is None
    assert settings.compaction.keep_recent_tokens == 20_000
    assert settings.compaction.reserve_tokens == 16_384
    assert settings.compaction.enabled
    assert not settings.allow_mutating


def test_config_dir_precedence(tmp_path: Path) -> None:
    assert config_dir({"OPI_CONFIG_DIR": str(tmp_path / "a"), "XDG_CONFIG_HOME": str(tmp_path / "x")}) \
        == tmp_path / "a"
    assert config_dir({"XDG_CONFIG_HOME": str(tmp_path / "x")}) == tmp_path / "x" / "opi"
    assert config_dir({}) == Path.home() / ".config" / "opi"


def test_full_precedence_chain(repo: Path, isolated_home: Path, tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(isolated_home / ".config")}
    write(global_config(isolated_home),
          'model = "openai:global"\nmax_turns = 10\nthinking = "low"\nbash_timeout = 5\n'
          'max_cost_usd = 1.5\n[compaction]\nkeep_recent_tokens = 1000\nreserve_tokens = 7\n')
    write(repo / ".opi" / "config.toml", 'model = "openai:project"\nmax_turns = 20\n'
          '[compaction]\nkeep_recent_tokens = 2000\n')
    sub = repo / "pkg" / "sub"
    write(sub / ".opi" / "config.toml", 'max_turns = 30\n')
    explicit = write(tmp_path / "explicit.toml", 'thinking = "high"\n')

    settings = load_settings(sub, config_path=explicit, env={**env, "OPI_MAX_TURNS": "40"},
                             flags={"model": "anthropic:flag"})
    assert settings.model == "anthropic:flag"  # flag beats project and global
    assert settings.max_turns == 40  # env beats the nearest project file
    assert settings.thinking == "high"  # --config beats the global file
    assert settings.bash_timeout == 5  # only the global file sets it
    assert settings.max_cost_usd == 1.5
    # tables merge key by key: the project overrides one key, the global file's other key survives
    assert settings.compaction.keep_recent_tokens == 2000
    assert settings.compaction.reserve_tokens == 7

    without_env = load_settings(sub, env=env)
    assert without_env.max_turns == 30  # the closest .opi/config.toml wins
    assert without_env.model == "openai:project"


def test_project_files_stop_at_git_root(repo: Path, isolated_home: Path) -> None:
    # a .opi directory above the repository is someone else's project and must not apply
    write(repo.parent / ".opi" / "config.toml", 'model = "openai:outside"\n')
    env = {"XDG_CONFIG_HOME": str(isolated_home / ".config")}
    assert load_settings(repo, env=env).model == DEFAULT_MODEL
    assert config_files(repo, env=env) == []


def test_opi_config_dir_env(repo: Path, tmp_path: Path) -> None:
    write(tmp_path / "cfg" / "config.toml", 'model = "openai:from-config-dir"\n')
    assert load_settings(repo, env={"OPI_CONFIG_DIR": str(tmp_path / "cfg")}).model == "openai:from-config-dir"


def test_relative_session_dir_is_relative_to_its_file(repo: Path) -> None:
    write(repo / ".opi" / "config.toml", 'session_dir = "sessions"\n')
    settings = load_settings(repo / ".", env={})
    assert settings.session_path == (repo / ".opi" / "sessions").resolve()


def test_unknown_key_names_file_and_key(repo: Path) -> None:
    path = write(repo / ".opi" / "config.toml", 'modle = "openai:x"\n')
    with pytest.raises(SettingsError) as info:
        load_settings(repo, env={})
    assert str(path) in str(info.value)
    assert "modle: unknown key" in str(info.value)


def test_unknown_nested_key(repo: Path) -> None:
    write(repo / ".opi" / "config.toml", "[compaction]\nkeep_recent = 5\n")
    with pytest.raises(SettingsError, match=r"compaction\.keep_recent: unknown key"):
        load_settings(repo, env={})


@pytest.mark.parametrize(("toml", "key"), [
    ('max_turns = "ten"', "max_turns"),
    ('max_turns = "10"', "max_turns"),  # strings are not silently coerced
    ("max_turns = 0", "max_turns"),
    ('thinking = "extreme"', "thinking"),
    ("allow_mutating = 1", "allow_mutating"),
    ('tools = "read"', "tools"),
    ("max_cost_usd = -1", "max_cost_usd"),
    ("[retry]\nmax_retries = -1", "retry.max_retries"),
    ('[retry]\nmax_retries = "3"', "retry.max_retries"),
    ("[retry]\nbackoff = 2", "retry.backoff"),
    ("[compaction]\nsummary_max_tokens = 0", "compaction.summary_max_tokens"),
])
def test_wrong_types_name_the_key(repo: Path, toml: str, key: str) -> None:
    path = write(repo / ".opi" / "config.toml", toml + "\n")
    with pytest.raises(SettingsError) as info:
        load_settings(repo, env={})
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message


def test_invalid_toml_names_the_file_and_line(repo: Path) -> None:
    path = write(repo / ".opi" / "config.toml", 'model = "unterminated\n')
    with pytest.raises(SettingsError) as info:
        load_settings(repo, env={})
    assert str(path) in str(info.value)
    assert "invalid TOML" in str(info.value)
    assert "line 1" in str(info.value)


def test_missing_explicit_config(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="no such file"):
        load_settings(repo, config_path=tmp_path / "nope.toml", env={})


@pytest.mark.parametrize(("name", "value", "expect"), [
    ("OPI_MAX_TURNS", "many", "OPI_MAX_TURNS"),
    ("OPI_MAX_COST", "cheap", "OPI_MAX_COST"),
    ("OPI_ALLOW_MUTATING", "maybe", "OPI_ALLOW_MUTATING"),
    ("OPI_THINKING", "extreme", "OPI_THINKING"),
    ("OPI_MAX_TURNS", "-3", "OPI_MAX_TURNS"),
])
def test_bad_env_values_name_the_variable(repo: Path, name: str, value: str, expect: str) -> None:
    with pytest.raises(SettingsError, match=expect):
        load_settings(repo, env={name: value})


def test_env_values_are_parsed(repo: Path) -> None:
    settings = load_settings(repo, env={
        "OPI_MODEL": "openai:gpt-4.1", "OPI_MAX_COST": "0.25", "OPI_TIMEOUT": "30", "OPI_TOOLS": "read, ls",
        "OPI_ALLOW_MUTATING": "yes", "OPI_NO_SESSION": "1", "OPI_THINKING": "medium",
        "OPI_MAX_RETRIES": "2", "OPI_COMPACTION_THRESHOLD": "50000",
    })
    assert settings.model == "openai:gpt-4.1"
    assert settings.max_cost_usd == 0.25
    assert settings.timeout_seconds == 30
    assert settings.tools == ["read", "ls"]
    assert settings.allow_mutating and settings.no_session
    assert settings.thinking == "medium"
    assert settings.retry.max_retries == 2
    assert settings.compaction.threshold_tokens == 50_000


def test_env_zero_lifts_a_limit_from_a_file(repo: Path) -> None:
    write(repo / ".opi" / "config.toml", "max_cost_usd = 2.0\nmax_turns = 5\n")
    settings = load_settings(repo, env={"OPI_MAX_COST": "0", "OPI_MAX_TURNS": "none"})
    assert settings.max_cost_usd is None
    assert settings.max_turns is None


def test_bad_flag_value_is_reported(repo: Path) -> None:
    with pytest.raises(SettingsError, match="command line: thinking"):
        load_settings(repo, env={}, flags={"thinking": "lots"})


def test_endpoints_table(repo: Path) -> None:
    write(repo / ".opi" / "config.toml",
          '[endpoints.local]\nbase_url = "http://127.0.0.1:11434/v1"\napi = "openai"\n'
          'api_key_env = "LOCAL_KEY"\n')
    settings = load_settings(repo, env={})
    endpoint = settings.endpoints["local"]
    assert endpoint.base_url == "http://127.0.0.1:11434/v1"
    assert endpoint.api_key_env == "LOCAL_KEY"


def test_endpoint_with_unknown_key(repo: Path) -> None:
    path = write(repo / ".opi" / "config.toml", '[endpoints.local]\nbase_url = "http://x"\nurl = "y"\n')
    with pytest.raises(SettingsError) as info:
        load_settings(repo, env={})
    assert str(path) in str(info.value)
    assert "endpoints.local" in str(info.value)


def test_parse_tool_names() -> None:
    assert parse_tool_names(["read,grep", " ls ", "find,"]) == ["read", "grep", "ls", "find"]


def test_appended_prompts_accumulate_across_files_and_flags(repo: Path) -> None:
    write(repo / ".opi" / "config.toml", 'append_system_prompt = ["from the file"]\n')
    settings = load_settings(repo, env={}, flags={"append_system_prompt": ["from the flag"]})
    assert settings.append_system_prompt == ["from the file", "from the flag"]


def test_the_config_tables_are_what_the_agent_runs_with(repo: Path) -> None:
    """One definition each: `[compaction]` is the compactor's config, `[retry]` the retry policy, and the
    thinking levels are the model layer's."""
    from bot.agent.compaction import CompactionConfig
    from bot.llm.base import THINKING_LEVELS
    from bot.llm.retry import RetryPolicy

    write(repo / ".opi" / "config.toml", "thinking = \"medium\"\n[compaction]\nthreshold_tokens = 9000\n"
          "summary_max_tokens = 512\n[retry]\nmax_retries = 2\nmax_retry_after = 30.0\n")
    settings = load_settings(repo, env={})
    assert isinstance(settings.compaction, CompactionConfig) and isinstance(settings.retry, RetryPolicy)
    assert settings.compaction.threshold(200_000) == 9_000
    assert settings.compaction.summary_budget(9_000) == 512
    assert (settings.retry.max_retries, settings.retry.max_retry_after) == (2, 30.0)
    assert settings.thinking == "medium" and THINKING_LEVELS == ("off", "low", "medium", "high")
