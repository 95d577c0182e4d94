"""The typed `:args` parser of configs/common.py."""

import pytest

from configs import common


def test_parse_defaults_and_overrides():
  a = common.parse_arg(
    'quick,size=32,lr=0.5,name=lgg,domains=a;b',
    quick=False,
    size=64,
    lr=1e-3,
    name='fundus',
    domains=('x',),
  )
  assert (
    a.quick is True and a.size == 32 and a.lr == 0.5 and a.name == 'lgg' and a.domains == ('a', 'b')
  )
  b = common.parse_arg('', quick=False, size=64)
  assert b.quick is False and b.size == 64
  assert common.parse_arg('quick=false', quick=True).quick is False


def test_unknown_key_lists_valid_keys():
  with pytest.raises(
    ValueError, match=r"config argument='sise': expected a key of this config, one of quick, size"
  ):
    common.parse_arg('sise=3', quick=False, size=64)


def test_bad_type_names_key_and_value():
  with pytest.raises(ValueError, match=r"size='big': expected int"):
    common.parse_arg('size=big', size=64)
  with pytest.raises(ValueError, match=r"quick='maybe': expected bool"):
    common.parse_arg('quick=maybe', quick=False)
  with pytest.raises(
    ValueError, match=r"config argument size='': expected a value \(size=...\) of type int"
  ):
    common.parse_arg('size', size=64)


def test_check_choice():
  assert common.check_choice('method', 'pi', ('pi', 'mi')) == 'pi'
  with pytest.raises(ValueError, match=r"method='x': expected one of 'pi', 'mi'"):
    common.check_choice('method', 'x', ('pi', 'mi'))
