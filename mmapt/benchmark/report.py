"""Markdown summaries of the benchmark JSON reports."""
import json
import os
from typing import List


def _cell(value, fmt: str = '{}') -> str:
    return '-' if value is None else fmt.format(value)


def _peak(value) -> str:
    # None: not measured (off CUDA); never shown as 0.
    return 'not measured' if value is None else f'{value:.0f}'


def write_report(report: dict, path: str) -> str:
    """Write ``report`` as JSON to ``path`` and its :func:`gpu_markdown`
    next to it (``.md``), each through a temporary file renamed over the
    old one, so a run stopped mid-write leaves the previous whole file.
    Returns the Markdown's path."""
    markdown = os.path.splitext(path)[0] + '.md'
    for target, text in ((path, json.dumps(report,
                                           indent=1)), (markdown,
                                                        gpu_markdown(report))):
        with open(target + '.tmp', 'w') as f:
            f.write(text)
        os.replace(target + '.tmp', target)
    return markdown


def _table(header: List[str], rows: List[List[str]]) -> List[str]:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
    return lines


def gpu_markdown(report: dict) -> str:
    """The GPU benchmark's report as Markdown: per architecture the arms
    (images/s, median, tokens, speed-up against the plain square model and
    against the fastest plain arm), the checks, the stage split and the
    tokenizer's share, the overhead counts, training and the profile."""
    env = report['environment']
    settings = report['settings']
    lines = [
        '# GPU benchmark', '',
        f'{env.get("gpu", env["device"])}, torch {env["torch"]}' +
        (f', CUDA {env["cuda"]}' if env.get('cuda') else '') +
        f', {settings["dtype"]}, canvas {settings["canvas"]}, batch 1, '
        f'{len(settings["images"])} images, {settings["repeat"]} timed '
        f'repeats (interleaved), commit {env.get("git_commit")}.', '',
        f'Command: `{settings.get("command", "")}`', ''
    ]
    if report.get('interrupted'):
        lines += [f'**Stopped early**: {report["interrupted"]}.', '']
    for name, arch in report['archs'].items():
        arms = arch.get('arms', {})
        info = arch.get('arm_info', {})
        summary = arch.get('summary') or {}
        base = arms.get('plain_square', {}).get('total_ms')
        fastest = summary.get('fastest_plain')
        fastest_ms = arms[fastest]['total_ms'] if fastest else None
        lines += [f'## EVA-02 {name}', '']
        if arch.get('status') not in (None, 'done'):
            lines += [f'Status: {arch.get("status")}.', '']
        lines += [
            f'Attention: {arch.get("attention_path", "not known yet")}.', ''
        ]
        if arch.get('timing_cut'):
            lines += [f'Timing: {arch["timing_cut"]}.', '']
        rows = []
        for arm, r in arms.items():
            rows.append([
                arm, f'{r["img_s"]:.2f}', f'{r["median_ms"]:.2f}',
                _cell(r['tokens']),
                _cell(r['keep_ratio'], '{:.3f}'),
                _cell(base / r['total_ms'] if base else None, '{:.3f}x'),
                _cell(fastest_ms / r['total_ms'] if fastest_ms else None,
                      '{:.3f}x'),
                _cell(r.get('attention_kernel')),
                _peak(r.get('peak_mib'))
            ])
        lines += _table([
            'arm', 'img/s', 'median ms', 'tokens', 'keep', 'vs plain square',
            f'vs fastest plain ({fastest})', 'attention', 'peak MiB'
        ], rows) + ['']
        lines += [
            'Peak MiB: CUDA memory above what was in use, over the arm\'s '
            'warm-up on the first image (a capture or a compile included); '
            '"not measured" off CUDA. Attention: the packed-attention '
            'kernel(s) of the arm\'s first call (none: the plain model\'s '
            'own SDPA).', ''
        ]
        for arm, why in arch.get('skipped', {}).items():
            lines.append(f'- skipped `{arm}`: {why}')
        for arm, why in arch.get('failed', {}).items():
            lines.append(f'- **failed** `{arm}`: {why}')
        for arm, why in arch.get('cut', {}).items():
            lines.append(f'- **cut** `{arm}`: {why}')
        for arm, record in info.items():
            attention = record.get('attention') or {}
            if attention.get('varlen_failed'):
                lines.append(f'- `{arm}`: {attention["varlen_failed"]} '
                             'varlen calls refused: '
                             f'{"; ".join(attention["errors"])}')
            if record.get('compile'):
                c = record['compile']
                lines.append(
                    f'- `{arm}` compile: ran as CUDA graphs '
                    f'{_cell(c["ran_as_cuda_graphs"])}, '
                    f'{_cell(c["cuda_graphs_recorded"])} graphs recorded, '
                    f'{c["cudagraph_skips"]} CUDA-graph skips, '
                    f'{c["graph_breaks"]} graph breaks, {c["recompiles"]} '
                    'recompiles')
        lines += [
            '', f'No-merge overhead (apt_nomerge / plain_square - 1): '
            f'{_cell(summary.get("nomerge_overhead"), "{:.1%}")}; fastest '
            f'APT arm `{summary.get("fastest_apt")}` vs fastest plain arm '
            f'`{fastest}`: '
            f'{_cell(summary.get("fastest_apt_vs_fastest_plain"), "{}x")}.', ''
        ]
        if arch.get('checks'):
            lines += _table(
                ['check', 'worst image', 'max abs diff', 'rel L2 diff'], [[
                    k, c['image'], f'{c["max_abs_diff"]:.3g}',
                    f'{c["rel_l2_diff"]:.3g}'
                ] for k, c in arch['checks'].items()]) + ['']
        if arch.get('stages'):
            stage_names = [
                'tokenizer', 'embedding', 'context', 'blocks', 'unpack'
            ]
            rows = [[
                arm, f'{s["forward_ms"]:.1f}',
                *[_cell(s['stages_ms'].get(n), '{:.2f}')
                  for n in stage_names], f'{s["tokenizer_share"]:.1%}',
                f'{s["outside_blocks_share"]:.1%}'
            ] for arm, s in arch['stages'].items()]
            lines += [
                'Stage split (one forward per image, summed; stage '
                'boundaries as CUDA events, no synchronize):', ''
            ]
            lines += _table(
                ['arm', 'forward ms'] + [f'{n} ms' for n in stage_names] +
                ['tokenizer share', 'outside blocks'], rows) + ['']
        overhead = arch.get('overhead') or {}
        if 'error' in overhead:
            lines += [f'Overhead counts: {overhead["error"]}', '']
        elif overhead:
            rows = []
            for arm in ('plain', 'apt', 'apt_static'):
                if arm in overhead:
                    o = overhead[arm]
                    rows.append([
                        arm,
                        str(o['total_ops']),
                        str(o['outside_blocks']),
                        str(o['total_syncs']),
                        ', '.join(f'{k} {v}'
                                  for k, v in sorted(o['ops'].items()))
                    ])
            lines += [
                f'Overhead counts (one forward of '
                f'{overhead["image"]}):', ''
            ]
            lines += _table([
                'model', 'aten ops', 'outside blocks', 'host syncs',
                'ops per stage'
            ], rows) + ['']
        training = arch.get('training')
        if training:
            rows = [[arm, f'{r["median_ms"]:.2f}', f'{r["img_s"]:.2f}']
                    for arm, r in training['arms'].items()]
            t = training['summary']
            lines += ['Training step (forward + backward, train mode):', '']
            lines += _table(['arm', 'median ms', 'img/s'], rows)
            lines += [
                '', f'APT vs plain square '
                f'{_cell(t["speedup_vs_plain_square"], "{}x")}; padding-free'
                f' APT vs plain window-padded '
                f'{_cell(t["nopad_speedup_vs_plain_window"], "{}x")}.', ''
            ]
            for arm, why in training.get('failed', {}).items():
                lines.append(f'- **failed** training `{arm}`: {why}')
            for arm, why in training.get('cut', {}).items():
                lines.append(f'- **cut** training `{arm}`: {why}')
        for arm, prof in (arch.get('profile') or {}).items():
            lines += [f'### Profile: one {arm} forward', '']
            if 'error' in prof:
                lines += [f'failed: {prof["error"]}', '']
                continue
            lines += [
                f'forward {prof["forward_ms"]} ms, kernels busy '
                f'{_cell(prof["kernel_ms"])} ms, GPU idle '
                f'{_cell(prof["gpu_idle_ms"])} ms '
                f'({_cell(prof["gpu_idle_share"], "{:.1%}")}).', ''
            ]
            lines += _table(['stage', 'CPU ms', 'device ms'],
                            [[k, str(v['cpu_ms']),
                              _cell(v['device_ms'])]
                             for k, v in prof['stages'].items()]) + ['']
            lines += ['```', prof['table'].rstrip(), '```', '']
    return '\n'.join(lines) + '\n'


def gpu_text_summary(report: dict) -> str:
    """A few lines per architecture for the terminal: the arms, what was
    left out and why, the headline ratios."""
    env = report['environment']
    lines = [
        f'torch {env["torch"]}, device {env["device"]}' +
        (f' ({env["gpu"]}, CUDA {env["cuda"]})' if 'gpu' in env else '') +
        f', dtype {report["settings"]["dtype"]}'
    ]
    for name, arch in report['archs'].items():
        lines += [
            '', f'EVA-02 {name} ({arch.get("status")}): attention path: '
            f'{arch.get("attention_path")}',
            f'{"arm":<24}{"img/s":>9}{"median ms":>11}{"tokens":>9}'
            f'{"keep":>7}{"attention":>16}{"peak MiB":>14}'
        ]
        for arm, r in arch.get('arms', {}).items():
            lines.append(f'{arm:<24}{r["img_s"]:>9.2f}{r["median_ms"]:>11.2f}'
                         f'{_cell(r["tokens"]):>9}'
                         f'{_cell(r["keep_ratio"], "{:.3f}"):>7}'
                         f'{_cell(r.get("attention_kernel")):>16}'
                         f'{_peak(r.get("peak_mib")):>14}')
        for kind in ('skipped', 'failed', 'cut'):
            for arm, why in arch.get(kind, {}).items():
                lines.append(f'{kind} {arm}: {why}')
        s = arch.get('summary') or {}
        lines.append(
            f'APT speed-up vs plain square {s.get("speedup_vs_plain_square")}'
            f', vs plain window-padded {s.get("speedup_vs_plain_window")}; '
            f'token ratio {s.get("token_ratio")}; padding-free APT vs plain '
            f'window-padded {s.get("nopad_speedup_vs_plain_window")}; '
            f'fastest APT ({s.get("fastest_apt")}) vs fastest plain '
            f'({s.get("fastest_plain")}) '
            f'{s.get("fastest_apt_vs_fastest_plain")}; no-merge overhead '
            f'{s.get("nomerge_overhead")}')
        stages = (arch.get('stages') or {}).get('apt_square')
        if stages:
            lines.append(f'tokenizer share of the APT forward '
                         f'{stages["tokenizer_share"]:.1%}, outside the '
                         f'blocks {stages["outside_blocks_share"]:.1%}')
        if arch.get('training'):
            t = arch['training']['summary']
            lines.append(f'training (forward + backward): APT vs plain '
                         f'square {t["speedup_vs_plain_square"]}, padding-'
                         f'free APT vs plain window-padded '
                         f'{t["nopad_speedup_vs_plain_window"]}')
    if report.get('interrupted'):
        lines += ['', f'stopped early: {report["interrupted"]}']
    return '\n'.join(lines)
