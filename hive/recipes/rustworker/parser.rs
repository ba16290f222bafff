//! Recursive-descent parser producing an expression tree.
//!
//! Grammar (lowest to highest precedence):
//!   sum     := product (('+' | '-') product)*
//!   product := unary (('*' | '/' | '%') unary)*
//!   unary   := '-' unary | power
//!   power   := atom ('^' unary)?
//!   atom    := NUMBER | IDENT | IDENT '(' args ')' | '(' sum ')'

use crate::lexer::Token;

#[derive(Debug, Clone, PartialEq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Pow,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Number(f64),
    Constant(String),
    Negate(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Call(String, Vec<Expr>),
}

struct Parser<'a> {
    tokens: &'a [Token],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<&'a Token> {
        let token = self.tokens.get(self.pos);
        self.pos += 1;
        token
    }

    fn expect(&mut self, wanted: &Token) -> Result<(), String> {
        match self.next() {
            Some(token) if token == wanted => Ok(()),
            Some(token) => Err(format!("expected '{wanted}', found '{token}'")),
            None => Err(format!("expected '{wanted}', found end of input")),
        }
    }

    fn sum(&mut self) -> Result<Expr, String> {
        let mut left = self.product()?;
        loop {
            let op = match self.peek() {
                Some(Token::Plus) => BinOp::Add,
                Some(Token::Minus) => BinOp::Sub,
                _ => return Ok(left),
            };
            self.pos += 1;
            let right = self.product()?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
    }

    fn product(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek() {
                Some(Token::Star) => BinOp::Mul,
                Some(Token::Slash) => BinOp::Div,
                Some(Token::Percent) => BinOp::Rem,
                _ => return Ok(left),
            };
            self.pos += 1;
            let right = self.unary()?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.peek() == Some(&Token::Minus) {
            self.pos += 1;
            return Ok(Expr::Negate(Box::new(self.unary()?)));
        }
        self.power()
    }

    fn power(&mut self) -> Result<Expr, String> {
        let base = self.atom()?;
        if self.peek() == Some(&Token::Caret) {
            self.pos += 1;
            let exponent = self.unary()?;
            return Ok(Expr::Binary(BinOp::Pow, Box::new(base), Box::new(exponent)));
        }
        Ok(base)
    }

    fn atom(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Token::Number(n)) => Ok(Expr::Number(*n)),
            Some(Token::Ident(name)) => {
                if self.peek() != Some(&Token::LParen) {
                    return Ok(Expr::Constant(name.clone()));
                }
                self.pos += 1;
                let mut args = Vec::new();
                if self.peek() == Some(&Token::RParen) {
                    self.pos += 1;
                    return Ok(Expr::Call(name.clone(), args));
                }
                loop {
                    args.push(self.sum()?);
                    match self.next() {
                        Some(Token::Comma) => continue,
                        Some(Token::RParen) => return Ok(Expr::Call(name.clone(), args)),
                        Some(token) => return Err(format!("expected ',' or ')', found '{token}'")),
                        None => return Err("unclosed function call".to_string()),
                    }
                }
            }
            Some(Token::LParen) => {
                let inner = self.sum()?;
                self.expect(&Token::RParen)?;
                Ok(inner)
            }
            Some(token) => Err(format!("unexpected '{token}'")),
            None => Err("unexpected end of input".to_string()),
        }
    }
}

pub fn parse(tokens: &[Token]) -> Result<Expr, String> {
    let mut parser = Parser { tokens, pos: 0 };
    let expr = parser.sum()?;
    match parser.peek() {
        None => Ok(expr),
        Some(token) => Err(format!("unexpected '{token}' after expression")),
    }
}
